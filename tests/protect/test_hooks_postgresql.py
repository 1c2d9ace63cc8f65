"""The `postgresql` hook around a frozen file system, under an insert load.

One cluster per session (Debian's PostgreSQL, run as `nobody`, on a unix
socket, its data directory on a loop-mounted ext4). The "snapshot" is
`cp -a` of the data directory while the file system is frozen. The copy,
started as a restore would start it, must hold every insert acknowledged
before the instant and none after (compared with the load's own log), and
crash recovery must start at the checkpoint the hook's `pg_backup_start`
made (the label's START WAL LOCATION).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from strongroom.protect.freeze import FsFreeze
from strongroom.protect.postgresql_hook import PostgresqlHook
from strongroom.protect.quiesce import Consistency, quiesce
from tests.protect.loopfs import loop_ext4
from tests.protect.pg_cluster import Cluster, available, bin_dir, lsn, owned_by_nobody

pytestmark = pytest.mark.xdist_group("postgresql")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    why = available()
    if why:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="strongroom-pg-", dir="/tmp"))
    os.chmod(base, 0o755)  # nobody walks through it to its folders
    with loop_ext4(base, 256) as mount:
        bindir = bin_dir()
        assert bindir is not None
        folder = owned_by_nobody(mount / "pg")
        pg = Cluster.create(bindir, folder / "data", base / "socket", folder / "server.log")
        pg.start()
        try:
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE load(n integer PRIMARY KEY, pad text)")
            yield pg
        finally:
            pg.stop()
    shutil.rmtree(base, ignore_errors=True)


class Load(threading.Thread):
    """pgbench-style inserts, one transaction each: n = 1, 2, ... with (start, ack)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.log: dict[int, tuple[float, float]] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    start = time.monotonic()
                    conn.execute("INSERT INTO load VALUES (%s, repeat('p', 500))", (n,))
                    self.log[n] = (start, time.monotonic())
        except BaseException as err:
            self.error = err


def test_a_restored_copy_holds_exactly_the_commits_before_the_instant(cluster: Cluster) -> None:
    copies = owned_by_nobody(Path(tempfile.mkdtemp(dir="/tmp")), 0o755)
    try:
        _check_a_restored_copy(cluster, copies)
    finally:
        shutil.rmtree(copies, ignore_errors=True)


def _check_a_restored_copy(cluster: Cluster, copies: Path) -> None:
    load = Load(cluster.dsn)
    load.start()
    time.sleep(0.3)
    hook = PostgresqlHook(cluster.dsn, 30)
    with quiesce([hook], FsFreeze(str(cluster.data)), 30) as q:
        entered = time.monotonic()
        copy = cluster.copy_to(copies / "data", copies / "socket", copies / "server.log")
        leaving = time.monotonic()
    time.sleep(0.3)
    load.stop.set()
    load.join(30)
    assert load.error is None

    result = q.result
    assert result.consistency == Consistency.APPLICATION, result.reason
    assert result.held_seconds is not None and result.held_seconds >= leaving - entered
    pre, post = result.hooks
    label = post.details["backup_label"]
    assert f"LABEL: {pre.details['label']}\n" in label
    assert f"START WAL LOCATION: {pre.details['start_lsn']} " in label
    assert lsn(post.details["stop_lsn"]) > lsn(pre.details["start_lsn"])
    assert result.summary()["hooks"][1]["details"]["backup_label"] == label

    # Restored as docs/protect.md says: the data directory as the snapshot has
    # it, less postmaster.pid; the label is recorded, not written into it.
    (copy.data / "postmaster.pid").unlink()
    redo = copy.controldata()["Latest checkpoint's REDO location"]
    assert lsn(redo) >= lsn(pre.details["start_lsn"])  # recovery starts at the backup's checkpoint
    with_label = copy.copy_to(copies / "labelled", copies / "socket2", copies / "labelled.log")
    (with_label.data / "backup_label").write_text(label)
    os.chown(with_label.data / "backup_label", *_owner(with_label.data))
    copy.start()
    try:
        with psycopg.connect(copy.dsn) as conn:
            held = [n for (n,) in conn.execute("SELECT n FROM load ORDER BY n")]
    finally:
        copy.stop()
    last = len(held)
    assert held == list(range(1, last + 1)) and last > 10
    for n, (start, ack) in load.log.items():
        if ack < entered:
            assert n <= last, f"insert {n}, acknowledged before the instant, is missing"
        if n > last:
            assert ack > leaving, f"insert {n} was acknowledged while frozen"
        else:
            assert start < entered, f"insert {n} began after the instant"
    assert sum(1 for _, ack in load.log.values() if ack > leaving) > 10  # the load went on

    # Why the label is not written into a restored directory: PostgreSQL would
    # want the WAL up to pg_backup_stop's end record, written after the snapshot.
    with pytest.raises(RuntimeError, match="WAL ends before end of online backup"):
        with_label.start()


def _owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid


def test_an_unreachable_server_is_a_reason_without_the_password(tmp_path: Path) -> None:
    dsn = f"host={tmp_path} port=5432 user=app password=hunter2-secret dbname=app"
    hook = PostgresqlHook(dsn, 2)
    assert hook.name == f"postgresql host={tmp_path} port=5432 dbname=app user=app"
    with quiesce([hook], None, 5) as q:
        pass
    assert q.result.consistency == Consistency.CRASH
    reason = q.result.reason or ""
    assert reason.startswith(f"{hook.name}: pre: cannot connect: ")
    assert "hunter2" not in reason and "\n" not in reason
    assert q.result.hooks[1].message == "post: no backup to stop"


def test_a_role_without_backup_rights_is_a_reason(cluster: Cluster) -> None:
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS viewer")
        conn.execute("CREATE ROLE viewer LOGIN")
    dsn = cluster.dsn.replace("user=postgres", "user=viewer")
    with quiesce([PostgresqlHook(dsn, 5)], None, 5) as q:
        pass
    assert q.result.consistency == Consistency.CRASH
    assert "pre: pg_backup_start: permission denied for function pg_backup_start" in (
        q.result.reason or ""
    )
    assert q.result.hooks[1].message == "post: no backup to stop"
