"""The built-in `sqlite` hook: a database file whose every commit before the
instant is in the snapshot, and no commit after it.

`pre`: open the database (never creating it), and in WAL mode run
`PRAGMA wal_checkpoint(TRUNCATE)`, which copies the write-ahead log into the
main file and empties the log, so the snapshot's database file stands alone;
then `BEGIN IMMEDIATE`, which takes SQLite's write lock (WAL mode) or its
RESERVED lock (rollback-journal mode): no other connection can commit until
`post` rolls our empty transaction back. The checkpoint cannot run inside
that transaction (SQLite refuses), so a writer may commit between the two:
then the log holds that commit, and the snapshot has it in its `-wal` file,
which nobody can append to or reset while we hold the lock. Either way the
files on disk at the instant are one committed state.

A checkpoint that readers keep from finishing (`busy`) is noted, not a
failure, for the same reason. Writers wait on our lock for their busy
timeout (an application without one gets SQLITE_BUSY at once: the hook is
then visible to it, as any writer holding the lock would be).

The lock lives in this process: if we die, the kernel drops it with our
file descriptors; if we hang, the engine calls `release()` from its timer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse

from strongroom.protect.hooks import HookReport


class SqliteHook:
    holds_writers = True

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.name = f"sqlite {path}"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def pre(self) -> HookReport:
        started = time.monotonic()
        details: dict[str, str] = {}
        try:
            uri = "file:" + urllib.parse.quote(self.path) + "?mode=rw"
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=self.timeout,  # the busy timeout: waits for a writer to finish
                isolation_level=None,
                check_same_thread=False,  # release() may come from the engine's timer
            )
        except sqlite3.Error as err:
            return HookReport.timed(self.name, "pre", False, started, f"cannot open: {_line(err)}")
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            details["journal_mode"] = mode
            note = f"{mode} mode"
            if mode == "wal":
                busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                details["checkpoint"] = f"busy={busy} log={frames} checkpointed={done}"
                note += ", checkpointed" if not busy else ", checkpoint incomplete (readers)"
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            conn.close()
            return HookReport.timed(self.name, "pre", False, started, f"{_line(err)}", details)
        with self._lock:
            self._conn = conn
        return HookReport.timed(self.name, "pre", True, started, f"{note}; writers held", details)

    def post(self, snapshot_ok: bool) -> HookReport:
        started = time.monotonic()
        with self._lock:
            held = self._conn is not None
        self.release()
        return HookReport.timed(
            self.name,
            "post",
            True,
            started,
            "writers let go" if held else "nothing held (any more)",
        )

    def release(self) -> None:
        """Roll back our empty transaction and close: writers go on. Idempotent,
        any thread."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # closing drops the lock anyway
            finally:
                conn.close()


def _line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
