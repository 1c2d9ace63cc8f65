"""The backup server's users, their sign-in sessions and the audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

States its tables in full (never imports catalog.schema), like 0001.
`login_sessions` (not `sessions`: that is the media write sessions of 0001)
keeps only a digest of each token, never the token.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.CheckConstraint("role IN ('administrator', 'operator', 'read-only')", name="role"),
    )
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created", _when(), nullable=False),
        sa.Column("expires", _when(), nullable=False, index=True),
        sa.Column("last_seen", _when(), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _when(), nullable=False, index=True),
        sa.Column("user_name", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("address", sa.String(64)),
    )


def downgrade() -> None:
    for table in ("audit_log", "login_sessions", "users"):
        op.drop_table(table)
