"""Where the catalog lives and how to talk to it: URL → SQLAlchemy engine.

- nothing configured: SQLite at `data_home()/strongroom/catalog.sqlite`;
- a path, or `sqlite:///PATH`: SQLite there;
- `postgresql://` (or `postgres://`, `postgresql+psycopg://`): PostgreSQL
  through psycopg 3.

SQLite is opened for several processes at once (two CLI commands, the
inventory and a restore): WAL, a busy timeout, and every transaction begins
IMMEDIATE, so a writer waits for the lock at BEGIN instead of failing with
"database is locked" half-way through. Foreign keys are on.

A URL's password never reaches a message: `masked(url)` is what errors
print, and `one_line` strips the password from a driver's text too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from strongroom.config import data_home
from strongroom.errors import CatalogError

SQLITE_BUSY_SECONDS = 60.0
PG_CONNECT_SECONDS = 10


def default_path() -> Path:
    return data_home() / "strongroom" / "catalog.sqlite"


def parse_url(text: str | None) -> URL:
    """The catalog's URL as SQLAlchemy wants it (driver named)."""
    if not text:
        return URL.create("sqlite", database=str(default_path()))
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser()))
    scheme = text.split("://", 1)[0].lower()
    try:
        url = make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise CatalogError(f"catalog URL {_scrub_text(text)}: not a valid URL") from None
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:":
            raise CatalogError("catalog URL sqlite: needs a file (sqlite:///PATH)")
        return url.set(drivername="sqlite", database=str(Path(url.database).expanduser()))
    raise CatalogError(
        f"catalog URL {masked(url)}: unsupported (use a SQLite path or postgresql://...)"
    )


def masked(url: URL) -> str:
    """The URL with its password replaced by ***: safe in any message."""
    return url.render_as_string(hide_password=True)


def one_line(err: BaseException, url: URL) -> str:
    """A driver's error as one line, without the URL's password."""
    source = getattr(err, "orig", None) or err
    lines = [ln.strip() for ln in str(source).splitlines() if ln.strip()]
    text = "; ".join(lines[:2]) or type(source).__name__
    if url.password:
        text = text.replace(str(url.password), "***")
    return text[:400]


def _scrub_text(text: str) -> str:
    """A URL that did not parse, with anything between :// and @ hidden."""
    head, sep, rest = text.partition("://")
    if sep and "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return head + sep + rest


def create_engine(url: URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_SECONDS}
    return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)


def _sqlite_engine(url: URL) -> sa.Engine:
    path = Path(str(url.database))
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise CatalogError(
                f"catalog {path}: cannot create its folder: {err.strerror}"
            ) from None
    elif not path.is_file():
        raise CatalogError(f"catalog {path}: not a file")
    elif not os.access(path, os.R_OK | os.W_OK):
        raise CatalogError(f"catalog {path}: not readable and writable by this user")
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
        poolclass=sa.pool.QueuePool,
        pool_size=2,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling off: SQLAlchemy's "begin"
        # below decides (pysqlite otherwise begins late and commits DDL).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SECONDS * 1000)}")
            _wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL is safe
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _wal(cursor: Any) -> None:
    """Switch the file to WAL once. The switch needs the file to itself and
    SQLite answers "database is locked" at once, without its busy handler,
    when another process holds it at that moment (two commands opening a
    fresh catalog together): retry within the busy timeout."""
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
