"""The `sqlite` hook under a writer thread, in WAL and rollback-journal modes.

The "snapshot" is a copy of the database's files taken inside the quiesced
block; it must pass `PRAGMA integrity_check` and hold exactly the commits
acknowledged before the instant (none committed while the hook held the
lock, none after), compared with the writer's own log.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from strongroom.protect.quiesce import Consistency, quiesce
from strongroom.protect.sqlite_hook import SqliteHook


class Writer(threading.Thread):
    """Inserts n = 1, 2, ... one transaction each; logs (start, ack) per n."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.log: dict[int, tuple[float, float]] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            n = 0
            while not self.stop.is_set():
                n += 1
                start = time.monotonic()
                conn.execute("BEGIN")
                conn.execute("INSERT INTO t(n, pad) VALUES (?, ?)", (n, b"p" * 2000))
                conn.execute("COMMIT")
                self.log[n] = (start, time.monotonic())
                time.sleep(0.001)
            conn.close()
        except BaseException as err:
            self.error = err

    def acked_after(self, moment: float) -> int:
        return sum(1 for _, ack in list(self.log.values()) if ack > moment)


def _database(tmp_path: Path, mode: str) -> Path:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
    conn.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    conn.close()
    return path


def _copy(path: Path, folder: Path) -> Path:
    """What a snapshot of the folder holds: the database and its journal files."""
    folder.mkdir()
    for suffix in ("", "-wal", "-journal"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            shutil.copy2(source, folder / (path.name + suffix))
    return folder / path.name


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_the_copy_holds_exactly_the_commits_before_the_instant(tmp_path: Path, mode: str) -> None:
    path = _database(tmp_path, mode)
    writer = Writer(path)
    writer.start()
    time.sleep(0.3)  # a few hundred commits, and a WAL to checkpoint
    with quiesce([SqliteHook(str(path), 5)], None, 5) as q:
        entered = time.monotonic()
        copy = _copy(path, tmp_path / "snapshot")
        time.sleep(0.2)  # writers stay held while the block lasts
        leaving = time.monotonic()
    deadline = time.monotonic() + 10  # on a loaded machine the writer needs longer
    while writer.acked_after(leaving) <= 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop.set()
    writer.join(10)
    assert writer.error is None
    assert q.result.consistency == Consistency.APPLICATION, q.result.reason
    assert q.result.hooks[0].details["journal_mode"] == mode

    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    held = [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]
    conn.close()
    last = len(held)
    assert held == list(range(1, last + 1))  # one committed state: a prefix of the log
    assert last > 10
    for n, (start, ack) in writer.log.items():
        if ack < entered:
            assert n <= last, f"commit {n}, acknowledged before the instant, is missing"
        if n > last:
            assert ack > leaving, f"commit {n} went through while the hook held writers"
        else:
            assert start < entered
    assert writer.acked_after(leaving) > 10  # and the writer went on


def test_a_hold_past_the_timeout_lets_writers_go(tmp_path: Path) -> None:
    path = _database(tmp_path, "wal")
    writer = Writer(path)
    writer.start()
    time.sleep(0.1)
    with quiesce([SqliteHook(str(path), 5)], None, 0.5) as q:
        entered = time.monotonic()
        time.sleep(1.5)  # the snapshot step hangs
    writer.stop.set()
    writer.join(10)
    assert writer.error is None
    # Held for the timeout only: the writer committed again before the block ended.
    during = [ack - entered for _, ack in writer.log.values() if entered < ack < entered + 1.5]
    assert during and min(during) < 0.5 + 0.5
    assert q.result.consistency == Consistency.CRASH
    assert (
        f"sqlite {path} held writers past the freeze timeout (0.5 s) and let them go"
        " before the snapshot ended" in (q.result.reason or "")
    )


def test_a_missing_database_is_a_reason_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with quiesce([SqliteHook(str(path), 5)], None, 5) as q:
        pass
    assert not path.exists()
    assert q.result.consistency == Consistency.CRASH
    assert f"sqlite {path}: pre: cannot open: unable to open database file" == q.result.reason
    assert [r.message for r in q.result.hooks][1] == "post: nothing held (any more)"


def test_a_writer_holding_the_lock_past_the_timeout_fails_pre(tmp_path: Path) -> None:
    path = _database(tmp_path, "wal")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with quiesce([SqliteHook(str(path), 0.3)], None, 5) as q:
            pass
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert q.result.consistency == Consistency.CRASH
    assert "pre: database is locked" in (q.result.reason or "")
