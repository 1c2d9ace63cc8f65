"""The first catalog: libraries, pools, media, drives, sessions, media
contents and events.

Revision ID: 0001
Revises:
Create Date: 2026-05-10

States its tables in full (never imports catalog.schema), so that it keeps
creating exactly this schema whatever later revisions change; constraint
and index names come from the naming convention env.py sets.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_STATES = (
    "free", "appending", "full", "expired", "offline", "suspect", "cleaning", "error",
    "unrecognised", "foreign", "blank",
)  # fmt: skip


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "libraries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("settings", _json(), nullable=False),
        sa.CheckConstraint(_in("kind", ("mtx", "script", "virtual")), name="kind"),
    )
    op.create_table(
        "pools",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("retention_seconds", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(64)),
        sa.Column("cleaning_prefix", sa.String(32), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.CheckConstraint("retention_seconds >= 0", name="retention"),
    )
    op.create_table(
        "media",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("media_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("barcode", sa.String(32), unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("library_id", sa.Integer, sa.ForeignKey("libraries.id", ondelete="SET NULL")),
        sa.Column("slot", sa.Integer),
        sa.Column("drive", sa.Integer),
        sa.Column("pool_id", sa.Integer, sa.ForeignKey("pools.id", ondelete="RESTRICT")),
        sa.Column("label_sequence", sa.Integer),
        sa.Column("labelled_at", _when()),
        sa.Column("first_written", _when()),
        sa.Column("last_written", _when()),
        sa.Column("bytes_written", sa.BigInteger, nullable=False),
        sa.Column("sessions", sa.Integer, nullable=False),
        sa.Column("expires_at", _when()),
        sa.Column("repository_id", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(_in("state", _STATES), name="state"),
        sa.UniqueConstraint("library_id", "slot"),
        sa.Index(None, "pool_id", "state"),
        sa.Index(None, "library_id", "online", "expires_at"),
    )
    op.create_table(
        "drives",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "library_id",
            sa.Integer,
            sa.ForeignKey("libraries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("address", sa.Integer, nullable=False),
        sa.Column("device", sa.String(4096)),
        sa.Column("loaded_barcode", sa.String(32)),
        sa.UniqueConstraint("library_id", "address"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "medium_id", sa.Integer, sa.ForeignKey("media.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("written_at", _when(), nullable=False),
        sa.Column("points", _json(), nullable=False),
        sa.Column("catalog_file", sa.Integer),
        sa.Column("bytes_written", sa.BigInteger, nullable=False),
        sa.Column("continued_from", sa.Uuid),
        sa.Column("continues_on", sa.Uuid),
        sa.UniqueConstraint("medium_id", "number"),
    )
    op.create_table(
        "media_contents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "medium_id", sa.Integer, sa.ForeignKey("media.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("session", sa.Integer, nullable=False),
        sa.Column("point_id", sa.String(64), index=True),
        sa.Column("pack_id", sa.String(64), index=True),
        sa.Column("file_number", sa.Integer, nullable=False),
        sa.Column("first_record", sa.BigInteger, nullable=False),
        sa.Column("record_count", sa.BigInteger, nullable=False),
        sa.Column("byte_count", sa.BigInteger, nullable=False),
        sa.CheckConstraint("(point_id IS NULL) <> (pack_id IS NULL)", name="one_object"),
        sa.Index(None, "medium_id", "session"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _when(), nullable=False, index=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("library", sa.String(128)),
        sa.Column("barcode", sa.String(32), index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.CheckConstraint(_in("severity", ("info", "warning", "error")), name="severity"),
    )


def downgrade() -> None:
    for table in ("events", "media_contents", "sessions", "drives", "media", "pools", "libraries"):
        op.drop_table(table)
