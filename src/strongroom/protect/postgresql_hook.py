"""The built-in `postgresql` hook: PostgreSQL's own backup API around the snapshot.

`pre` opens a session over the connection string and runs
`pg_backup_start(label, fast := true)`: an immediate checkpoint (crash
recovery from the snapshot then replays only what follows it) and full-page
writes forced on until the backup ends. The SAME session stays open across
the snapshot (a non-exclusive backup ends with its session: if we die, the
server aborts it by itself). `post`, after the thaw, runs
`pg_backup_stop(wait_for_archive := false)` and keeps what it returns — the
backup_label and tablespace_map contents, the start and stop WAL locations —
in the report's `details`, which the cycle stores in the point's summary.

How a restored data directory starts (docs/protect.md "Application
consistency"): the snapshot is atomic (frozen, or a block-layer view) and
holds `pg_wal`, so the restored directory is a crash image taken inside the
backup: PostgreSQL starts it by crash recovery from the checkpoint
`pg_backup_start` made, and it holds every transaction committed before the
instant and none after. The label is therefore recorded, NOT written into
the restored directory: with a backup_label present, PostgreSQL requires the
WAL up to the backup's end record, which `pg_backup_stop` writes after the
snapshot (it fails with "WAL ends before end of online backup"). The label
serves point-in-time recovery from a WAL archive (write it as `backup_label`
and set `restore_command`) and ties the point to the server's WAL history.

Servers before 15 have the same functions under their old names
(`pg_start_backup(label, true, false)`, `pg_stop_backup(false, false)`).
psycopg (3) is imported here only (pyproject's contracts).
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime

import psycopg
from psycopg import conninfo

from strongroom.errors import ConfigError
from strongroom.protect.hooks import HookReport

MAX_LABEL = 64 * 1024  # a backup_label is a few hundred bytes; a tablespace map one line each


class PostgresqlHook:
    holds_writers = False  # PostgreSQL keeps running during a backup

    def __init__(self, dsn: str, timeout: float) -> None:
        try:
            parts = conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            # Never repeat the string: it may hold a password.
            raise ConfigError("postgresql hook: dsn is not a valid connection string") from None
        self.dsn = dsn
        self.timeout = timeout
        where = " ".join(
            f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if k in parts
        )
        self.name = f"postgresql {where}".strip()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._modern = True

    def pre(self) -> HookReport:
        started = time.monotonic()
        try:
            conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, math.ceil(self.timeout)),
                application_name="strongroom",
            )
        except psycopg.Error as err:
            return HookReport.timed(
                self.name, "pre", False, started, f"cannot connect: {_line(err)}"
            )
        label = f"strongroom {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        try:
            # Bounds every statement of this session, pg_backup_stop's too.
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (str(max(1, int(self.timeout * 1000))),),
            )
            self._modern = conn.info.server_version >= 150000
            sql = (
                "SELECT pg_backup_start(%s, fast := true)::text"
                if self._modern
                else "SELECT pg_start_backup(%s, true, false)::text"
            )
            row = conn.execute(sql, (label,)).fetchone()
        except psycopg.Error as err:
            conn.close()
            return HookReport.timed(
                self.name, "pre", False, started, f"pg_backup_start: {_line(err)}"
            )
        start_lsn = str(row[0]) if row else "?"
        with self._lock:
            self._conn = conn
        details = {"label": label, "start_lsn": start_lsn}
        return HookReport.timed(
            self.name, "pre", True, started, f"backup started at {start_lsn}", details
        )

    def post(self, snapshot_ok: bool) -> HookReport:
        started = time.monotonic()
        with self._lock:
            conn = self._conn
        if conn is None:
            return HookReport.timed(self.name, "post", True, started, "no backup to stop")
        sql = (
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive := false)"
            if self._modern
            else "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        )
        try:
            row = conn.execute(sql).fetchone()
        except psycopg.Error as err:
            self.release()
            return HookReport.timed(
                self.name, "post", False, started, f"pg_backup_stop: {_line(err)}"
            )
        self.release()
        if row is None:
            return HookReport.timed(
                self.name, "post", False, started, "pg_backup_stop returned nothing"
            )
        stop_lsn, label, spcmap = (str(v) if v is not None else "" for v in row)
        if len(label) > MAX_LABEL or len(spcmap) > MAX_LABEL:
            return HookReport.timed(
                self.name, "post", False, started, "pg_backup_stop: oversized backup_label"
            )
        details = {"stop_lsn": stop_lsn, "backup_label": label}
        if spcmap:
            details["tablespace_map"] = spcmap
        return HookReport.timed(
            self.name, "post", True, started, f"backup stopped at {stop_lsn}", details
        )

    def release(self) -> None:
        """Close the session (the server then ends the backup). Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return " ".join(text[0].split()) if text else type(err).__name__
