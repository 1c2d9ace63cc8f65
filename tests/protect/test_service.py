"""The protection service (`strongroom protect --policy NAME`, services/protect_service.py)
end to end, as root, with the real program in a subprocess and cycles of a few
seconds (STRONGROOM_TEST_MIN_CYCLE).

A writer logs each file it creates (started, acknowledged). Every point the
service made is restored and compared with that log: it holds every write
acknowledged before its freeze, whole, and — when the cycle read only the
journal's changes up to its sequence — none started after its thaw.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.model.point import RecoveryPoint
from strongroom.services.points import find_point
from strongroom.services.volumes import attach_volume, create_volume
from strongroom.sources.volume_state import volumes_dir
from tests.conftest import open_local_repository
from tests.helpers.cli import run_cli, strongroom_command
from tests.helpers.volumes import MiB, Writer, check_writes, clean_everything, needs_volumes
from tests.protect.loopfs import ROOT, loop_ext4

# Trackers size their kernel queues from sysctls that the overflow tests lower for
# a moment, and a fanotify mark sees the whole file system: every test that runs
# a tracker runs in one xdist worker, one after the other (CI: --dist loadgroup).
pytestmark = [ROOT, pytest.mark.xdist_group("journal-trackers")]

CYCLE = 3  # seconds


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    with loop_ext4(tmp_path, 64) as mount:
        data = mount / "data"
        data.mkdir()
        yield data


def write_policy(env: dict[str, str], name: str, body: str) -> None:
    config = Path(env["STRONGROOM_CONFIG"])
    config.parent.mkdir(parents=True, exist_ok=True)
    with open(config, "a") as f:
        f.write(f"[protect.{name}]\n{body}\n")


@pytest.fixture
def env(cli_env: dict[str, str], initialized_repo: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **cli_env,
        "STRONGROOM_CONFIG": str(tmp_path / "config.toml"),
        "STRONGROOM_TEST_MIN_CYCLE": "1",
    }


def start_service(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*strongroom_command(), "--json", "protect", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def outcomes(proc: subprocess.Popen[bytes], timeout: float = 60) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def restore(env: dict[str, str], point: str, target: Path) -> Path:
    proc = run_cli(["restore", point, "--target", str(target)], env)
    assert proc.rc == 0, proc.err
    found = [p for p in target.rglob("data") if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def status(env: dict[str, str]) -> dict[str, Any]:
    proc = run_cli(["--json", "status"], env)
    assert proc.rc == 0, proc.err
    doc: dict[str, Any] = json.loads(proc.out)
    return doc


def points(repo_path: Path, done: list[dict[str, Any]]) -> list[RecoveryPoint]:
    repo = open_local_repository(repo_path)
    try:
        return [find_point(repo, o["point"]) for o in done]
    finally:
        repo.close()


def check_point(
    env: dict[str, str], point: RecoveryPoint, outcome: dict[str, Any], writer: Writer, tmp: Path
) -> set[int]:
    record = point.summary["protect"]
    root = restore(env, point.id, tmp / f"r-{point.short_id}")
    # A full comparison walks the tree after the thaw: it may hold later writes.
    after = (
        time.mktime(time.strptime(outcome["finished"][:19], "%Y-%m-%dT%H:%M:%S")) + 1
        if outcome["full"]
        else record["thawed_at"]
    )
    return check_writes(root, writer.log, record["frozen_at"], after)


def test_tree_cycles_hold_exactly_the_journal_instant_and_status_is_in_sync(
    env: dict[str, str], tree: Path, repo_path: Path, tmp_path: Path
) -> None:
    """(a) + (c): four cycles of a tree under a writer; every point exact; status in sync."""
    write_policy(env, "t", f'sources = ["{tree}"]\ncycle = "{CYCLE}s"\nfreeze_timeout = "5s"')
    writer = Writer(tree, pause=0.01).start()
    try:
        done = outcomes(start_service(env, "--policy", "t", "--cycles", "4"))
    finally:
        writer.stop()
    # Status first: the lag it reports grows while the points are checked below.
    doc = status(env)
    assert not writer.error
    assert [o["error"] for o in done] == [""] * 4
    assert done[0]["full"] and not any(o["full"] for o in done[1:]), done
    assert {o["consistency"] for o in done} == {"application-consistent"}
    found = points(repo_path, done)
    present = [check_point(env, p, o, writer, tmp_path) for p, o in zip(found, done, strict=True)]
    assert all(len(a) < len(b) for a, b in itertools.pairwise(present)), "no progress"
    assert all(p.consistency == "application-consistent" for p in found)
    assert all(p.summary["protect"]["quiesce"]["frozen"] for p in found)

    (source,) = doc["sources"]
    assert source["source"] == "t" and source["tracker_in_sync"] is True, source
    assert source["lag_seconds"] < 2 * CYCLE and not source["late"], source
    assert source["last_point"]["id"] == done[-1]["point"]
    assert source["last_error"] is None
    assert source["points"] == 4
    assert source["worst_gap_seconds"] < 2 * CYCLE, source


def test_failing_pre_hook_gives_crash_consistent_points_and_a_failing_source_its_error(
    env: dict[str, str], tree: Path, repo_path: Path, tmp_path: Path
) -> None:
    """(e): a pre hook exits 3: points are taken, crash-consistent with the reason. A
    second source of the policy (a volume image never attached) fails every cycle
    without holding the tree's cycles back; status shows its error."""
    image = tmp_path / "never-attached.raw"
    image.write_bytes(b"\0" * 65536)
    write_policy(
        env,
        "h",
        f'sources = ["{tree}", "{image}"]\ncycle = "{CYCLE}s"\n'
        'hooks = [{type = "command", pre = "echo cannot flush >&2; exit 3"}]',
    )
    (tree / "a").write_bytes(b"a")
    proc = start_service(env, "--policy", "h", "--cycles", "2")
    out, _err = proc.communicate(timeout=60)
    assert proc.returncode != 0  # the last cycle of a source failed
    done = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    mine = [o for o in done if o["source"] == "h.data"]
    failed = [o for o in done if o["source"] == "h.never-attached.raw"]
    assert len(mine) == 2 and len(failed) == 2, done
    assert all(o["point"] and o["consistency"] == "crash-consistent" for o in mine)
    assert all("exited 3" in o["reason"] and "pre" in o["reason"] for o in mine), mine
    assert all(not o["point"] and "not attached" in o["error"] for o in failed), failed
    for p in points(repo_path, mine):
        assert p.consistency == "crash-consistent"
        assert "exited 3" in p.summary["protect"]["reason"]
        assert restore(env, p.id, tmp_path / f"r-{p.short_id}").joinpath("a").read_bytes() == b"a"

    doc = {s["source"]: s for s in status(env)["sources"]}
    assert "exited 3" in doc["h.data"]["last_point"]["reason"]
    assert doc["h.data"]["last_point"]["consistency"] == "crash-consistent"
    assert doc["h.data"]["last_error"] is None
    assert "not attached" in doc["h.never-attached.raw"]["last_error"]["message"]
    assert doc["h.never-attached.raw"]["late"] is True


def test_sigkill_mid_run_and_restart_miss_no_change(
    env: dict[str, str], tree: Path, repo_path: Path, tmp_path: Path
) -> None:
    """(d): the service is SIGKILLed in the middle of its cycles (its tracker keeps
    running, orphaned, or dies with it); a restart runs a full comparison and every
    point after it is exact; the last point, taken after the writer stopped, holds
    every write the writer made."""
    write_policy(env, "k", f'sources = ["{tree}"]\ncycle = "{CYCLE}s"')
    writer = Writer(tree, pause=0.01).start()
    try:
        proc = start_service(env, "--policy", "k")
        time.sleep(CYCLE * 1.5)  # the first point, then in the middle of the second cycle
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _kill_orphan_tracker(Path(env["XDG_DATA_HOME"]) / "strongroom/protect/k/journal")
        done = outcomes(start_service(env, "--policy", "k", "--cycles", "2"))
    finally:
        writer.stop()
    assert done[0]["full"] and not done[1]["full"]
    for p, o in zip(points(repo_path, done), done, strict=True):
        check_point(env, p, o, writer, tmp_path)
    # After the writer stopped: one more cycle holds every write, exactly.
    final = outcomes(start_service(env, "--policy", "k", "--cycles", "1"))
    (last,) = points(repo_path, final)
    root = restore(env, last.id, tmp_path / "final")
    everything = check_writes(root, writer.log, float("inf"), float("inf"))
    assert everything == {w.seq for w in writer.log if w.acked is not None}


def _kill_orphan_tracker(journal: Path) -> None:
    """A SIGKILLed service leaves its tracker child running: systemd's control
    group would end it with the service; here the test does (the pid it recorded)."""
    pid = json.loads((journal / "tracker.json").read_text())["pid"]
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    except (OSError, IndexError):
        return "X"


@needs_volumes
def test_volume_with_sqlite_hook_points_pass_integrity_check_and_hold_the_commits(
    env: dict[str, str], repo_path: Path, tmp_path: Path
) -> None:
    """(b): SQLite in WAL mode on a protected volume under an inserting writer, the
    `sqlite` hook: every point, restored, passes integrity_check and holds every
    commit made before its freeze and none begun after its thaw."""
    image, mount = tmp_path / "vol.qcow2", tmp_path / "vmnt"
    mount.mkdir()
    try:
        create_volume(str(image), 64 * MiB)
        attach_volume(str(image), str(mount))
        db = mount / "app.db"
        writer = SqliteWriter(db).start()
        write_policy(
            env,
            "v",
            f'sources = ["{image}"]\ncycle = "{CYCLE}s"\n'
            f'hooks = [{{type = "sqlite", path = "{db}"}}]',
        )
        try:
            done = outcomes(start_service(env, "--policy", "v", "--cycles", "3"))
        finally:
            writer.stop()
        assert [o["error"] for o in done] == [""] * 3, done
        assert {o["consistency"] for o in done} == {"application-consistent"}, done
        for p in points(repo_path, done):
            record = p.summary["protect"]
            rows = restored_rows(env, p.id, tmp_path / p.short_id)
            for seq, (_started, committed) in writer.log.items():
                if committed is not None and committed < record["frozen_at"]:
                    assert seq in rows, f"commit {seq} before the freeze is missing"
            for seq in rows:
                assert writer.log[seq][0] < record["thawed_at"], f"row {seq} after the thaw"
    finally:
        clean_everything(volumes_dir(), [mount])


class SqliteWriter:
    """Inserts rows 0, 1, 2, ... one transaction each, logging (started, committed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log: dict[int, tuple[float, float | None]] = {}
        self._stop = threading.Event()
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, payload BLOB)")
        con.commit()
        con.close()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SqliteWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        con = sqlite3.connect(self.path, timeout=30)
        seq = 0
        while not self._stop.is_set():
            started = time.time()
            self.log[seq] = (started, None)
            con.execute("INSERT INTO t VALUES (?, ?)", (seq, os.urandom(512)))
            con.commit()
            self.log[seq] = (started, time.time())
            seq += 1
            time.sleep(0.005)
        con.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def restored_rows(env: dict[str, str], point: str, tmp: Path) -> set[int]:
    tmp.mkdir()
    raw = tmp / "vol.raw"
    proc = run_cli(["restore", point, "--target", str(raw)], env)
    assert proc.rc == 0, proc.err
    for name in ("app.db", "app.db-wal"):
        subprocess.run(
            ["debugfs", "-R", f"dump /{name} {tmp / name}", str(raw)], capture_output=True
        )
    con = sqlite3.connect(tmp / "app.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {row[0] for row in con.execute("SELECT seq FROM t")}
    finally:
        con.close()
