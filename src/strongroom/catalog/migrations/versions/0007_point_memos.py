"""The server's memory of point documents: one row per point it has read.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

States its table in full (never imports catalog.schema), like 0001. A point's
id is the hash of its sealed object, so a document once read never changes
under its id: the rows are a cache that is never stale, only incomplete.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "point_memos",
        sa.Column("repository", sa.String(64), primary_key=True),
        sa.Column("point_id", sa.String(64), primary_key=True),
        sa.Column("doc", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("point_memos")
