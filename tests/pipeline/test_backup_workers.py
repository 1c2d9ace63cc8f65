"""The file backup's worker processes (pipeline/workers.py): the same point with
or without them, and a worker that dies or raises stops the backup cleanly."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from strongroom.errors import StrongroomError
from strongroom.model.tree import decode_wires
from strongroom.pipeline.workers import WorkerFailed
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, BackupResult, backup_files
from strongroom.services.maintenance import check
from strongroom.services.restore import restore_files
from strongroom.types import Progress, ProgressCallback, no_progress
from tests.helpers.cli import PASSWORD
from tests.helpers.compare import walk_differences
from tests.helpers.tree import compressible_bytes, random_bytes, write_file

MiB = 1024 * 1024


def children_of(pid: int) -> set[int]:
    """The live (or unreaped) child processes of `pid`."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except FileNotFoundError:
            continue
    return found


def gone(pid: int) -> bool:
    """True once `pid` is dead and reaped (a zombie still counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def subtree(repo: Repository, result: BackupResult, path: Path) -> bytes:
    """The tree id of the directory `path` in the point (its parents, e.g. /tmp,
    change under other processes)."""
    tree = bytes.fromhex(result.summary.tree_id)
    for name in os.fsencode(path).strip(b"/").split(b"/"):
        wires = {w["n"]: w for w in decode_wires(repo.load_chunk(tree, BlobType.TREE))}
        tree = wires[name]["st"]
    return tree


def make_mixed_tree(root: Path) -> None:
    """Tiny and big files, duplicates, hard links, symlinks, xattrs, an empty file;
    atimes set ahead so that reading does not change them (relatime)."""
    for i in range(240):
        write_file(root / f"tiny/{i % 7}/{i}.txt", compressible_bytes(40 + 17 * i, i))
    write_file(root / "big.bin", random_bytes(3 * MiB, 1))
    write_file(root / "mid.bin", random_bytes(300_000, 2))
    write_file(root / "copy/mid.bin", random_bytes(300_000, 2))
    write_file(root / "empty", b"")
    os.link(root / "big.bin", root / "tiny/big-link")
    os.link(root / "tiny/0/0.txt", root / "copy/tiny-link")
    os.symlink("../big.bin", root / "tiny/link")
    os.setxattr(root / "tiny/1/1.txt", "user.note", b"kept")
    os.setxattr(root / "big.bin", "user.big", b"x" * 100)
    ahead = time.time_ns() + 3600 * 10**9
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames, "."]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.utime(path, ns=(ahead, st.st_mtime_ns), follow_symlinks=False)


@pytest.fixture
def workers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the workers with the first work (they wait for 8 MiB otherwise)."""
    monkeypatch.setenv("STRONGROOM_START_WORKERS_AFTER", "0")


def run(
    repo: Repository, src: Path, jobs: int, progress: ProgressCallback = no_progress
) -> BackupResult:
    return backup_files(repo, BackupRequest(paths=[str(src)], jobs=jobs), progress=progress)


def restores_exactly(repo: Repository, result: BackupResult, src: Path, target: Path) -> None:
    assert result.point is not None
    summary = restore_files(repo, result.point, str(target))
    assert summary.damaged == [] and summary.warnings == []
    assert walk_differences(src, target / str(src).lstrip("/")) == []


@pytest.mark.usefixtures("workers_at_once")
def test_jobs_give_the_same_point_and_exact_restores(
    tmp_path: Path, memory_repo: Repository
) -> None:
    src = tmp_path / "src"
    make_mixed_tree(src)
    before = children_of(os.getpid())
    first = run(memory_repo, src, jobs=2, progress=lambda _: None)
    assert children_of(os.getpid()) == before  # the workers are reaped
    one = backup_files(memory_repo, BackupRequest(paths=[str(src)], jobs=1, force_full=True))
    two = backup_files(memory_repo, BackupRequest(paths=[str(src)], jobs=2, force_full=True))
    ids = {subtree(memory_repo, r, src) for r in (first, one, two)}
    assert len(ids) == 1
    assert first.summary.chunks_new > 250
    assert first.summary.bytes_read == two.summary.bytes_read == one.summary.bytes_read
    assert first.summary.warnings == []
    restores_exactly(memory_repo, first, src, tmp_path / "t1")
    restores_exactly(memory_repo, two, src, tmp_path / "t2")
    assert check(memory_repo, read_data=True).report.ok


def killer(victims: list[int]) -> ProgressCallback:
    """A progress callback that SIGKILLs this process's new children once."""
    before = children_of(os.getpid())

    def progress(_: Progress) -> None:
        if victims:
            return
        victims.extend(children_of(os.getpid()) - before)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)

    return progress


@pytest.mark.usefixtures("workers_at_once")
def test_a_killed_worker_stops_the_backup_and_the_repository_stays_consistent(
    tmp_path: Path, memory_repo: Repository
) -> None:
    src = tmp_path / "src"
    make_mixed_tree(src)
    victims: list[int] = []
    with pytest.raises(WorkerFailed) as caught:
        run(memory_repo, src, jobs=2, progress=killer(victims))
    assert victims, "no worker was running"
    message = str(caught.value)
    assert "\n" not in message and "died (killed by signal 9)" in message
    assert all(gone(pid) for pid in victims)
    assert check(memory_repo, read_data=True).report.ok
    # The next backup, in a new session (as a new process would open it: this
    # one still counts the chunks its abandoned packs held as queued).
    repo = Repository.open(memory_repo.backend, PASSWORD.encode())
    again = run(repo, src, jobs=2)
    restores_exactly(repo, again, src, tmp_path / "t")


@pytest.mark.usefixtures("workers_at_once")
def test_a_worker_that_raises_gives_one_line(
    tmp_path: Path, memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    make_mixed_tree(src)
    parent = os.getpid()
    seal_new = Repository.seal_new

    def failing(self: Repository, data: bytes | memoryview, *, dry_run: bool = False) -> object:
        if os.getpid() != parent:
            raise RuntimeError("boom\nin the worker")
        return seal_new(self, data, dry_run=dry_run)

    monkeypatch.setattr(Repository, "seal_new", failing)
    before = children_of(parent)
    with pytest.raises(StrongroomError) as caught:
        run(memory_repo, src, jobs=2)
    assert str(caught.value) == "backup worker failed: RuntimeError: boom in the worker"
    assert children_of(parent) == before
    assert check(memory_repo, read_data=True).report.ok
