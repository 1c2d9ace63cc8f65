"""A tree on a btrfs subvolume is read from a read-only snapshot taken at the
cycle's instant (sources/btrfs.py, services/protect_service.py), as root, on a
small loop-mounted btrfs.

The service test's writer keeps creating files and rewriting a counter in place
while the cycles read: every point holds exactly the writes finished before its
snapshot and none begun after it (a live read after the thaw would see later
counter values), and the snapshot folder is gone after each cycle and never in
a point or the journal.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import SourceError
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.sources.btrfs import (
    SNAPSHOT_FOLDER,
    ignored_folder,
    is_btrfs,
    plan_snapshot,
    subvolume_root,
)
from strongroom.trackers.fanotify import FsWatch
from strongroom.trackers.inotify import TreeWatch
from strongroom.trackers.journal import Journal
from tests.conftest import open_local_repository
from tests.helpers.cli import run_cli
from tests.helpers.volumes import Writer, check_writes
from tests.protect.loopfs import ROOT
from tests.protect.test_service import (
    env,  # noqa: F401  (a fixture)
    outcomes,
    points,
    restore,
    start_service,
    write_policy,
)

pytestmark = [
    ROOT,
    pytest.mark.skipif(shutil.which("mkfs.btrfs") is None, reason="needs btrfs-progs"),
    pytest.mark.xdist_group("journal-trackers"),
]

CYCLE = 2  # seconds


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def btrfs(tmp_path: Path) -> Iterator[Path]:
    """A mounted btrfs (128 MiB, sparse) at tmp_path/mnt."""
    image, mount = tmp_path / "btrfs.img", tmp_path / "mnt"
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    _run("mkfs.btrfs", "-q", "-f", str(image))
    mount.mkdir()
    # mount -o loop: the loop device is set up and freed (autoclear) by mount
    # itself, with no race against other tests taking loop devices.
    proc = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot loop-mount a btrfs: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


@pytest.fixture
def subvol(btrfs: Path) -> Path:
    """A subvolume named `data` (the service test's helpers look for that name)."""
    _run("btrfs", "subvolume", "create", str(btrfs / "data"))
    return btrfs / "data"


class Counter:
    """Rewrites `counter` in place (pwrite of a fixed-width number, fsync),
    logging (value, started, acknowledged)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"%08d" % 0)
        self.log: list[tuple[int, float, float]] = [(0, 0.0, 0.0)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        value = 0
        try:
            while not self._stop.is_set():
                value += 1
                started = time.time()
                os.pwrite(fd, b"%08d" % value, 0)
                os.fsync(fd)
                self.log.append((value, started, time.time()))
                time.sleep(0.003)
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_detects_the_subvolume_and_the_folder_inside_the_tree(subvol: Path, tmp_path: Path) -> None:
    (subvol / "dir").mkdir()
    assert is_btrfs(subvol) and not is_btrfs(tmp_path)
    assert subvolume_root(subvol / "dir") == str(subvol)
    assert subvolume_root(tmp_path) is None
    assert ignored_folder(subvol) == SNAPSHOT_FOLDER.encode()
    assert ignored_folder(subvol / "dir") is None  # the folder is outside that tree
    assert plan_snapshot(str(tmp_path), "x") is None


def test_reading_from_a_snapshot_records_the_tree_and_rereads_nothing_unchanged(
    subvol: Path, tmp_path: Path, initialized_repo: Path
) -> None:
    """`read_from`: the point names the tree's path, holds the snapshot's bytes (not
    the live ones), leaves the snapshot folder out; a second backup from a new
    snapshot (a new device number) reads nothing unchanged."""
    for i in range(5):
        (subvol / f"f{i}").write_bytes(b"x" * 5000 * (i + 1))
    repo = open_local_repository(initialized_repo)
    try:
        summaries = []
        for _ in range(2):
            snap = plan_snapshot(str(subvol), "unit")
            assert snap is not None
            snap.take()
            try:
                (subvol / "later").write_bytes(b"after the snapshot")
                req = BackupRequest(
                    paths=[str(subvol)],
                    read_from=snap.read_root,
                    omit=[str(subvol / SNAPSHOT_FOLDER)],
                )
                result = backup_files(repo, req)
            finally:
                snap.delete()
            (subvol / "later").unlink()
            assert result.point is not None and result.point.paths == [str(subvol)]
            summaries.append(result.summary)
        assert not (subvol / SNAPSHOT_FOLDER).exists() or not os.listdir(subvol / SNAPSHOT_FOLDER)
    finally:
        repo.close()
    assert summaries[0].bytes_read == sum(5000 * (i + 1) for i in range(5))
    assert summaries[1].bytes_read == 0 and summaries[1].files_unmodified == 5
    cli = {**os.environ, "STRONGROOM_REPO": str(initialized_repo)}
    target = tmp_path / "restored"
    proc = run_cli(["restore", result.point.id, "--target", str(target)], cli)
    assert proc.rc == 0, proc.err
    (root,) = [p for p in target.rglob("data") if p.is_dir()]
    assert sorted(os.listdir(root)) == [f"f{i}" for i in range(5)]  # no folder, no `later`


@pytest.mark.parametrize("backend", ["inotify", "fanotify"])
def test_trackers_ignore_the_snapshot_folder(btrfs: Path, backend: str) -> None:
    """Taking and deleting a snapshot of a tree that is its subvolume's root (the
    file system's top here, where fanotify's mark works) gives no change; a
    write next to it does."""
    tree = btrfs
    try:
        watch: FsWatch | TreeWatch = FsWatch(tree) if backend == "fanotify" else TreeWatch(tree)
    except SourceError as err:
        pytest.skip(f"{backend}: {err}")
    try:
        snap = plan_snapshot(str(tree), "trk")
        assert snap is not None
        snap.take()
        os.listdir(snap.read_root)
        snap.delete()
        (tree / "real").write_bytes(b"r")
        time.sleep(0.1)
        changes = watch.read()
    finally:
        watch.close()
    paths = {p for _k, p in changes}
    assert b"real" in paths, changes
    assert not [p for p in paths if p.startswith(SNAPSHOT_FOLDER.encode())], changes


def test_service_points_hold_exactly_the_writes_before_each_snapshot(
    env: dict[str, str],  # noqa: F811
    subvol: Path,
    repo_path: Path,
    tmp_path: Path,
) -> None:
    """Three cycles of a tree that is a btrfs subvolume, under writers that keep
    writing while the cycles read: each point is the snapshot's instant exactly."""
    write_policy(env, "b", f'sources = ["{subvol}"]\ncycle = "{CYCLE}s"\nfreeze_timeout = "5s"')
    writer = Writer(subvol, pause=0.005).start()
    counter = Counter(subvol / "counter")
    seen: list[list[str]] = []
    watching = threading.Event()

    def watch_folder() -> None:  # the snapshot folder's listings while the service runs
        while not watching.is_set():
            with contextlib.suppress(OSError):
                seen.append(os.listdir(subvol / SNAPSHOT_FOLDER))
            time.sleep(0.01)

    spy = threading.Thread(target=watch_folder, daemon=True)
    spy.start()
    try:
        done = outcomes(start_service(env, "--policy", "b", "--cycles", "3"))
    finally:
        watching.set()
        spy.join()
        writer.stop()
        counter.stop()
    assert not writer.error
    assert [o["error"] for o in done] == [""] * 3, done
    assert done[0]["full"] and not any(o["full"] for o in done[1:]), done
    assert any(seen), "no snapshot was ever taken"
    assert os.listdir(subvol / SNAPSHOT_FOLDER) == []  # deleted after every cycle
    present: list[set[int]] = []
    for p in points(repo_path, done):
        snap = p.summary["protect"]["snapshot"]
        assert snap["kind"] == "btrfs"
        assert p.summary["protect"]["quiesce"]["frozen"] is False  # no fsfreeze on btrfs
        root = restore(env, p.id, tmp_path / f"r-{p.short_id}")
        assert not (root / SNAPSHOT_FOLDER).exists()
        present.append(check_writes(root, writer.log, snap["began"], snap["ended"]))
        value = int((root / "counter").read_bytes())
        before = max(v for v, _s, acked in counter.log if acked < snap["began"])
        assert value >= before, f"counter {value}: write {before} finished before the snapshot"
        (started,) = [s for v, s, _a in counter.log if v == value]
        assert started < snap["ended"], f"counter {value} was written after the snapshot"
    assert all(len(a) < len(b) for a, b in itertools.pairwise(present))
    # Nothing of the snapshot folder ever entered the journal.
    journal = Journal(Path(env["XDG_DATA_HOME"]) / "strongroom/protect/b/journal")
    records = journal.read().records
    assert not [r for r in records if r.path.startswith(SNAPSHOT_FOLDER.encode())]
