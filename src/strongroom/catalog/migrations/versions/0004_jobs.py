"""The server's operations: jobs claimed through the database, schedules,
maintenance locks (SQLite leases) and sign-in rate limits.

Revision ID: 0004
Revises: 0002 (relinked to 0003 at merge)
Create Date: 2026-12-07

States its tables in full (never imports catalog.schema), like 0001.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("machine", sa.String(128)),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("every_seconds", sa.Integer),
        sa.Column("calendar", sa.String(64)),
        sa.Column("next_due", _when(), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.CheckConstraint("(every_seconds IS NULL) <> (calendar IS NULL)", name="when"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("machine", sa.String(128)),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created", _when(), nullable=False),
        sa.Column("due", _when(), nullable=False),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_at", _when()),
        sa.Column("heartbeat", _when()),
        sa.Column("finished", _when()),
        sa.Column("outcome", sa.Text),
        sa.Column("progress", _json()),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("schedule_id", sa.Integer, sa.ForeignKey("schedules.id", ondelete="SET NULL")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="state"
        ),
        sa.UniqueConstraint("schedule_id", "due"),
        sa.Index(None, "state", "due"),
        sa.Index(None, "state", "heartbeat"),
    )
    op.create_table(
        "maintenance_locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires", _when(), nullable=False),
    )
    op.create_table(
        "sign_in_limits",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", _when(), nullable=False),
        sa.Column("blocked_until", _when()),
    )


def downgrade() -> None:
    for table in ("sign_in_limits", "maintenance_locks", "jobs", "schedules"):
        op.drop_table(table)
