"""Bring a catalog database to this strongroom's schema when it is opened.

- a fresh (empty) database is created at the head revision;
- an older one is upgraded, every step in one transaction (both backends
  have transactional DDL: a failed upgrade leaves the old schema);
- one stamped with a revision this strongroom does not know (written by a
  newer strongroom) is refused with one line and never touched;
- two processes opening at once: the second waits for the first's lock
  (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory
  lock), then finds the database at head and does nothing.

Migrations ship inside the package (`strongroom.catalog:migrations`) and run
through alembic's API; no alembic.ini, no files outside the package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from strongroom.catalog.schema import VERSION_TABLE
from strongroom.errors import CatalogError

# pg_advisory_xact_lock key: "strongroom catalog migrate" (any constant; the
# backup server's own migrations will take the same one)
_PG_LOCK = 0x5354_524F_4E47_0001

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "strongroom.catalog:migrations")
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revisions(connection: sa.Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(context.get_current_heads())


def upgrade(connection: sa.Connection, where: str) -> bool:
    """Migrate to head if needed; True if anything was run. Commits."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with connection.begin():
        _lock(connection)
        current = current_revisions(connection)
        _refuse_unknown(script, current, head, where)
        if current == (head,):
            return False
        log.info("catalog %s: migrating from %s to %s", where, current or "empty", head)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return True


def _lock(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    # SQLite: the transaction began IMMEDIATE (engine.py): the write lock is held.


def _refuse_unknown(
    script: ScriptDirectory, current: Sequence[str], head: str | None, where: str
) -> None:
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise CatalogError(
            f"catalog {where} is at schema revision {', '.join(unknown)}, newer than this "
            f"strongroom's ({head}): upgrade strongroom (the catalog was left as it is)"
        )
