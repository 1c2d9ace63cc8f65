"""PostgreSQL on a protected volume, through the service, end to end (as root).

A volume is created and attached; Debian's PostgreSQL is initialised into a
folder on it (owned by `nobody`, tests/protect/pg_cluster.py) and started on a
unix socket; a pgbench-style load inserts 1, 2, 3, ... into a sequence table,
one transaction each, logging when each began and when its COMMIT returned.
`strongroom protect --policy` runs three cycles of a few seconds with the
`postgresql` hook. Then EVERY point is restored to a raw image, its data
directory copied out of a read-only loop mount, `postmaster.pid` removed (the
label is recorded, not written: docs/protect.md "Application consistency"),
and PostgreSQL started on it: it must start, recover from the checkpoint the
hook's `pg_backup_start` made, and hold exactly the numbers whose COMMIT
returned before the point's instant, and none whose transaction began after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.services.volumes import attach_volume, create_volume
from strongroom.sources.volume_state import volumes_dir
from tests.helpers.cli import run_cli
from tests.helpers.volumes import MiB, clean_everything, mounted_ro, needs_volumes
from tests.protect.loopfs import ROOT
from tests.protect.pg_cluster import Cluster, available, bin_dir, lsn, owned_by_nobody
from tests.protect.test_service import outcomes, points, start_service, status, write_policy

pytestmark = [ROOT, needs_volumes, pytest.mark.xdist_group("postgresql")]

CYCLE = 3  # seconds


@pytest.fixture
def env(cli_env: dict[str, str], initialized_repo: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **cli_env,
        "STRONGROOM_CONFIG": str(tmp_path / "config.toml"),
        "STRONGROOM_TEST_MIN_CYCLE": "1",
    }


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder `nobody` can walk through (pytest's tmp_path is root's only)."""
    why = available()
    if why:
        pytest.skip(why)
    folder = Path(tempfile.mkdtemp(prefix="strongroom-pgvol-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class SequenceLoad(threading.Thread):
    """Inserts 1, 2, 3, ... one autocommitted transaction each; log[n] =
    (wall clock before the INSERT was sent, wall clock when COMMIT returned)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.log: dict[int, tuple[float, float | None]] = {}
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                n = 0
                while not self.halt.is_set():
                    n += 1
                    self.log[n] = (time.time(), None)
                    conn.execute("INSERT INTO seq VALUES (%s, repeat('p', 200))", (n,))
                    self.log[n] = (self.log[n][0], time.time())
        except BaseException as err:  # reported by the test
            self.error = err

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        assert not self.is_alive(), "the load is stuck"


def test_every_point_starts_postgresql_and_holds_exactly_the_commits_before_its_instant(
    env: dict[str, str], repo_path: Path, tmp_path: Path, base: Path
) -> None:
    image, mount = tmp_path / "vol.qcow2", base / "vmnt"
    mount.mkdir()
    bindir = bin_dir()
    assert bindir is not None
    pg: Cluster | None = None
    try:
        create_volume(str(image), 128 * MiB)
        attach_volume(str(image), str(mount))
        os.chmod(mount, 0o755)
        folder = owned_by_nobody(mount / "pg")
        logs = owned_by_nobody(base / "logs")
        pg = Cluster.create(bindir, folder / "data", base / "socket", logs / "server.log")
        pg.start()
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE seq (n integer PRIMARY KEY, pad text)")
        write_policy(
            env,
            "pg",
            f'sources = ["{image}"]\ncycle = "{CYCLE}s"\nfreeze_timeout = "10s"\n'
            f'hooks = [{{type = "postgresql", dsn = "{pg.dsn}"}}]',
        )
        load = SequenceLoad(pg.dsn)
        load.start()
        try:
            done = outcomes(start_service(env, "--policy", "pg", "--cycles", "3"))
        finally:
            load.stop()
        doc = status(env)  # before the checks: the lag it reports grows meanwhile
        pg.stop()
        pg = None
        assert load.error is None, load.error
        assert [o["error"] for o in done] == [""] * 3, done
        assert {o["consistency"] for o in done} == {"application-consistent"}, done
        assert done[0]["full"] and not any(o["full"] for o in done[1:]), done

        held = []
        for point in points(repo_path, done):
            assert point.consistency == "application-consistent"
            held.append(check_point(env, point.id, point.summary["protect"], load, base))
        assert held == sorted(held) and held[0] < held[-1], f"no progress: {held}"
        assert max(load.log) > held[-1] + 10, "the load did not go on after the last point"

        (source,) = doc["sources"]
        assert source["source"] == "pg" and source["tracker_in_sync"] is True, source
        assert source["last_point"]["id"] == done[-1]["point"], source
        assert source["last_point"]["consistency"] == "application-consistent", source
        assert source["last_error"] is None and source["points"] == 3, source
    finally:
        if pg is not None:
            pg.stop()
        clean_everything(volumes_dir(), [mount])


def check_point(
    env: dict[str, str], point: str, record: dict[str, Any], load: SequenceLoad, base: Path
) -> int:
    """Restore `point`, start PostgreSQL on its data directory, compare with the
    load's log; returns the highest number it holds."""
    quiesced = record["quiesce"]
    assert quiesced["frozen"] and quiesced["consistency"] == "application-consistent", quiesced
    pre, post = quiesced["hooks"]
    assert pre["ok"] and post["ok"] and pre["phase"] == "pre", quiesced["hooks"]
    instant = quiesced["instant"]
    assert record["frozen_at"] <= instant <= record["thawed_at"], record

    work = owned_by_nobody(base / point[:12], 0o755)
    raw = work / "vol.raw"
    proc = run_cli(["restore", point, "--target", str(raw)], env)
    assert proc.rc == 0, proc.err
    with mounted_ro(raw, work / "ro") as ro:
        subprocess.run(["cp", "-a", str(ro / "pg" / "data"), str(work / "data")], check=True)
    raw.unlink()
    (work / "data" / "postmaster.pid").unlink()  # the live server's, in the snapshot
    assert not (work / "data" / "backup_label").exists()
    bindir = bin_dir()
    assert bindir is not None
    copy = Cluster(bindir, work / "data", work / "socket", work / "server.log", durable=False)
    # Crash recovery starts at (or after) the checkpoint pg_backup_start made.
    redo = copy.controldata()["Latest checkpoint's REDO location"]
    assert lsn(redo) >= lsn(pre["details"]["start_lsn"]), (redo, pre["details"])
    copy.start()
    try:
        with psycopg.connect(copy.dsn) as conn:
            rows = [n for (n,) in conn.execute("SELECT n FROM seq ORDER BY n")]
    finally:
        copy.stop()
    last = rows[-1] if rows else 0
    assert rows == list(range(1, last + 1)), "the sequence has holes"
    for n, (started, acked) in load.log.items():
        if acked is not None and acked < instant:
            assert n <= last, f"{n}: COMMIT returned before the instant, missing from {point}"
        if n <= last:
            assert started < instant, f"{n}: began after the instant, present in {point}"
    shutil.rmtree(work, ignore_errors=True)
    return last
