"""API tokens for scripts: a user's named, long-lived bearer tokens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

States its table in full (never imports catalog.schema), like 0001. Only a
digest of each token is kept, never the token (as `login_sessions`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created", _when(), nullable=False),
        sa.Column("expires", _when()),
        sa.Column("last_used", _when()),
        sa.UniqueConstraint("user_id", "name", name="api_token_name"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
