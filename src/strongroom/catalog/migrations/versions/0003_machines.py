"""The backup server's agents: machines, one-time enrollment tokens and the
commits an agent made (so a retried commit answers the same point).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

States its tables in full (never imports catalog.schema), like 0001 and
0002. Only digests (SHA-256) of enrollment tokens and machine secrets are
kept, never the values.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "machines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_digest", sa.String(64), nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("last_seen", _when()),
        sa.Column("disabled", sa.Boolean, nullable=False),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
        sa.Column("machine", sa.String(64), nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("expires", _when(), nullable=False, index=True),
        sa.Column("used", _when()),
    )
    op.create_table(
        "agent_commits",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "machine_id",
            sa.Integer,
            sa.ForeignKey("machines.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("commit_id", sa.String(64), nullable=False),
        sa.Column("point_id", sa.String(64), nullable=False),
        sa.Column("at", _when(), nullable=False),
        sa.UniqueConstraint("machine_id", "commit_id"),
    )


def downgrade() -> None:
    for table in ("agent_commits", "enrollment_tokens", "machines"):
        op.drop_table(table)
