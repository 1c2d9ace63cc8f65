"""Alembic's environment for the catalog, run only from `catalog.migrate`.

The caller hands over its open connection (`config.attributes["connection"]`),
already inside the transaction that holds the migration lock, so the
revision check and every step commit together or not at all. No offline
(SQL script) mode: the catalog migrates itself when it is opened.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from strongroom.catalog.schema import NAMING, VERSION_TABLE

if context.is_offline_mode():
    raise RuntimeError("the catalog's migrations run online only (at open)")

connection = context.config.attributes["connection"]
assert isinstance(connection, sa.Connection)
context.configure(
    connection=connection,
    # Only the naming convention: each migration states its own tables.
    target_metadata=sa.MetaData(naming_convention=NAMING),
    version_table=VERSION_TABLE,
    transactional_ddl=True,
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
