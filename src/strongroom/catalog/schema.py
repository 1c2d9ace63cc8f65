"""The catalog's tables (SQLAlchemy Core), as the newest migration leaves them.

The migrations in `migrations/versions` create and change the real tables;
this module is what the queries are written against, and a test compares the
two on both backends. Names of constraints and indexes follow one naming
convention, so a later migration can name what it alters on SQLite and on
PostgreSQL alike.

Design notes:
- media are keyed by an integer id; the media id (label) and the barcode are
  unique alternate keys. A barcode is optional (a cartridge without a tag
  can still be labelled and written): NULLs never collide.
- a medium's place is (library, slot, drive); one slot of a library holds one
  medium at most. An offline medium keeps the library it was last seen in.
- contents, sessions cascade with their medium (wiping a medium for a
  relabel is one DELETE); events name libraries and barcodes as text, so the
  history survives the deletion of what it speaks of.
- enumerations are strings with CHECK constraints (portable; readable in a
  plain `sqlite3` or `psql` session).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from strongroom.catalog.records import (
    MAX_BARCODE,
    MAX_NAME,
    MAX_USER_NAME,
    LibraryKind,
    MediumState,
    Role,
    Severity,
)

VERSION_TABLE = "catalog_version"  # alembic's, named so a shared database stays clear

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime on every backend: `timestamptz` on PostgreSQL,
    naive UTC text on SQLite (which has no zones), aware UTC when read."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("catalog times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _one_of(column: str, values: type[Any]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


metadata = sa.MetaData(naming_convention=NAMING)

libraries = sa.Table(
    "libraries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_NAME), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("settings", json_type(), nullable=False),
    sa.CheckConstraint(_one_of("kind", LibraryKind), name="kind"),
)

pools = sa.Table(
    "pools",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_NAME), nullable=False, unique=True),
    sa.Column("retention_seconds", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(64)),
    sa.Column("cleaning_prefix", sa.String(MAX_BARCODE), nullable=False),
    sa.Column("notes", sa.Text, nullable=False),
    sa.CheckConstraint("retention_seconds >= 0", name="retention"),
)

media = sa.Table(
    "media",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("media_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("barcode", sa.String(MAX_BARCODE), unique=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("online", sa.Boolean, nullable=False),
    sa.Column("library_id", sa.Integer, sa.ForeignKey("libraries.id", ondelete="SET NULL")),
    sa.Column("slot", sa.Integer),
    sa.Column("drive", sa.Integer),
    sa.Column("pool_id", sa.Integer, sa.ForeignKey("pools.id", ondelete="RESTRICT")),
    sa.Column("label_sequence", sa.Integer),
    sa.Column("labelled_at", UtcDateTime),
    sa.Column("first_written", UtcDateTime),
    sa.Column("last_written", UtcDateTime),
    sa.Column("bytes_written", sa.BigInteger, nullable=False),
    sa.Column("sessions", sa.Integer, nullable=False),
    sa.Column("expires_at", UtcDateTime),
    sa.Column("repository_id", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.CheckConstraint(_one_of("state", MediumState), name="state"),
    sa.UniqueConstraint("library_id", "slot"),
    sa.Index(None, "pool_id", "state"),
    sa.Index(None, "library_id", "online", "expires_at"),
)

drives = sa.Table(
    "drives",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "library_id",
        sa.Integer,
        sa.ForeignKey("libraries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("address", sa.Integer, nullable=False),
    sa.Column("device", sa.String(4096)),
    sa.Column("loaded_barcode", sa.String(MAX_BARCODE)),
    sa.UniqueConstraint("library_id", "address"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "medium_id", sa.Integer, sa.ForeignKey("media.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("written_at", UtcDateTime, nullable=False),
    sa.Column("points", json_type(), nullable=False),
    sa.Column("catalog_file", sa.Integer),
    sa.Column("bytes_written", sa.BigInteger, nullable=False),
    sa.Column("continued_from", sa.Uuid),  # media ids: the other medium may be unknown
    sa.Column("continues_on", sa.Uuid),
    sa.UniqueConstraint("medium_id", "number"),
)

media_contents = sa.Table(
    "media_contents",
    metadata,
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

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("library", sa.String(MAX_NAME)),
    sa.Column("barcode", sa.String(MAX_BARCODE), index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", json_type(), nullable=False),
    sa.CheckConstraint(_one_of("severity", Severity), name="severity"),
)

# --- the backup server (revision 0002) -----------------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_USER_NAME), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.CheckConstraint(_one_of("role", Role), name="role"),
)

login_sessions = sa.Table(
    "login_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("expires", UtcDateTime, nullable=False, index=True),
    sa.Column("last_seen", UtcDateTime, nullable=False),
)

api_tokens = sa.Table(  # revision 0005
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("expires", UtcDateTime),
    sa.Column("last_used", UtcDateTime),
    sa.UniqueConstraint("user_id", "name", name="api_token_name"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False, index=True),
    sa.Column("user_name", sa.String(MAX_USER_NAME)),  # text: survives the user's removal
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("address", sa.String(64)),
)

# --- the server's operations (revision 0004): jobs, schedules, locks, limits ----

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_NAME), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("machine", sa.String(MAX_NAME)),  # NULL: a job of the server itself
    sa.Column("spec", json_type(), nullable=False),
    sa.Column("every_seconds", sa.Integer),  # one of every_seconds / calendar
    sa.Column("calendar", sa.String(64)),
    sa.Column("next_due", UtcDateTime, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.CheckConstraint("(every_seconds IS NULL) <> (calendar IS NULL)", name="when"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("machine", sa.String(MAX_NAME)),  # NULL: run by a server process
    sa.Column("spec", json_type(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("due", UtcDateTime, nullable=False),
    sa.Column("claimed_by", sa.String(MAX_NAME)),
    sa.Column("claimed_at", UtcDateTime),
    sa.Column("heartbeat", UtcDateTime),
    sa.Column("finished", UtcDateTime),
    sa.Column("outcome", sa.Text),
    sa.Column("progress", json_type()),
    sa.Column("tries", sa.Integer, nullable=False),
    sa.Column("schedule_id", sa.Integer, sa.ForeignKey("schedules.id", ondelete="SET NULL")),
    sa.CheckConstraint(f"state IN ({', '.join(repr(s) for s in JOB_STATES)})", name="state"),
    # a schedule's run at one due time is one job, whichever process saw it
    sa.UniqueConstraint("schedule_id", "due"),
    sa.Index(None, "state", "due"),
    sa.Index(None, "state", "heartbeat"),
)

maintenance_locks = sa.Table(
    "maintenance_locks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(MAX_NAME), nullable=False),
    sa.Column("expires", UtcDateTime, nullable=False),
)

sign_in_limits = sa.Table(
    "sign_in_limits",
    metadata,
    sa.Column("key", sa.String(160), primary_key=True),  # "name:..." or "address:..."
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_start", UtcDateTime, nullable=False),
    sa.Column("blocked_until", UtcDateTime),
)

# --- the backup server's agents (revision 0003) --------------------------------

machines = sa.Table(
    "machines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_USER_NAME), nullable=False, unique=True),
    sa.Column("agent_id", sa.String(32), nullable=False, unique=True),
    sa.Column("secret_digest", sa.String(64), nullable=False),  # SHA-256, never the secret
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("last_seen", UtcDateTime),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("cluster", sa.String(MAX_USER_NAME)),  # revision 0006: the VM cluster, or NULL
)

enrollment_tokens = sa.Table(
    "enrollment_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
    sa.Column("machine", sa.String(MAX_USER_NAME), nullable=False),
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("expires", UtcDateTime, nullable=False, index=True),
    sa.Column("used", UtcDateTime),  # set once, by the one enrollment that consumed it
)

agent_commits = sa.Table(
    "agent_commits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "machine_id", sa.Integer, sa.ForeignKey("machines.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("commit_id", sa.String(64), nullable=False),
    sa.Column("point_id", sa.String(64), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("machine_id", "commit_id"),
)

# --- the server's memory of point documents (revision 0007) ---------------------

point_memos = sa.Table(
    "point_memos",
    metadata,
    sa.Column("repository", sa.String(64), primary_key=True),  # the repository's id
    sa.Column("point_id", sa.String(64), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),  # the point's document, as JSON
)
