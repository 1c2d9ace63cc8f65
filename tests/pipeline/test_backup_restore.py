"""The file backup and restore pipelines in process (services API, memory repository)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from strongroom.errors import Interrupted, PathNotFound, SourceError
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.browse import list_entries
from strongroom.services.maintenance import check
from strongroom.services.points import list_points
from strongroom.services.restore import restore_files
from strongroom.types import Progress
from tests.helpers.compare import walk_differences
from tests.helpers.tree import make_small_tree, random_bytes, write_file


def restored(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


def test_round_trip_and_summary(tmp_path: Path, memory_repo: Repository) -> None:
    src = tmp_path / "src"
    files = make_small_tree(src)
    result = backup_files(memory_repo, BackupRequest(paths=[str(src)], tags=["b", "a", "b"]))
    s = result.summary
    assert (s.files_new, s.files_changed, s.files_unmodified) == (len(files), 0, 0)
    assert s.total_bytes == s.bytes_read == sum(len(d) for d in files.values())
    assert s.dirs == 5 and s.other_entries == 0 and s.warnings == []
    assert result.point is not None and result.point.tags == ["a", "b"]
    assert [p.id for p in list_points(memory_repo)] == [result.point.id]

    summary = restore_files(memory_repo, result.point, str(tmp_path / "t"))
    assert summary.files == len(files) and summary.damaged == [] and summary.warnings == []
    assert walk_differences(src, restored(tmp_path / "t", src), check_atime=False) == []


def test_progress_is_reported(tmp_path: Path, memory_repo: Repository) -> None:
    src = tmp_path / "src"
    for i in range(5):
        write_file(src / f"{i}.bin", random_bytes(1024 * 1024, i))
    events: list[tuple[int, int]] = []

    def progress(p: Progress) -> None:
        events.append((p.files_done, p.bytes_done))

    backup_files(memory_repo, BackupRequest(paths=[str(src)]), progress=progress)
    assert events, "no progress was reported"
    assert events == sorted(events)  # totals only grow
    assert events[-1] == (5, 5 * 1024 * 1024)


def test_cancel_interrupts_and_leaves_a_consistent_repository(
    tmp_path: Path, memory_repo: Repository
) -> None:
    src = tmp_path / "src"
    for i in range(30):
        write_file(src / f"{i}.bin", random_bytes(1024 * 1024, i))
    cancel = threading.Event()

    def progress(p: Progress) -> None:
        if p.bytes_done > 0:  # as soon as the backup is under way
            cancel.set()

    with pytest.raises(Interrupted):
        backup_files(memory_repo, BackupRequest(paths=[str(src)]), progress, cancel)
    assert list_points(memory_repo) == []
    assert check(memory_repo, read_data=True).report.ok
    done = backup_files(memory_repo, BackupRequest(paths=[str(src)]))
    assert done.point is not None


def test_single_file_and_overlapping_paths(tmp_path: Path, memory_repo: Repository) -> None:
    src = tmp_path / "src"
    make_small_tree(src)
    request = BackupRequest(paths=[str(src / "sub"), str(src), str(src / "a.txt")])
    result = backup_files(memory_repo, request)
    assert result.point is not None
    paths = [p for p, _ in list_entries(memory_repo, bytes.fromhex(result.point.tree))]
    assert len(paths) == len(set(paths))  # nothing twice
    assert result.summary.total_files == 6
    only_file = backup_files(memory_repo, BackupRequest(paths=[str(src / "a.txt")]))
    assert only_file.point is not None
    restore_files(memory_repo, only_file.point, str(tmp_path / "t"))
    assert (restored(tmp_path / "t", src) / "a.txt").read_bytes() == b"hello world\n"
    assert os.listdir(restored(tmp_path / "t", src)) == ["a.txt"]


def test_path_through_a_symlinked_directory_is_refused(
    tmp_path: Path, memory_repo: Repository
) -> None:
    (tmp_path / "real" / "dir").mkdir(parents=True)
    os.symlink("real", tmp_path / "link")
    with pytest.raises(SourceError, match="not a directory"):
        backup_files(memory_repo, BackupRequest(paths=[str(tmp_path / "link" / "dir")]))
    with pytest.raises(SourceError, match="no such file"):
        backup_files(memory_repo, BackupRequest(paths=[str(tmp_path / "missing")]))


def test_hard_link_with_a_name_outside_the_backup(tmp_path: Path, memory_repo: Repository) -> None:
    src = tmp_path / "src"
    write_file(src / "inside", b"linked from outside")
    os.link(src / "inside", tmp_path / "outside")
    result = backup_files(memory_repo, BackupRequest(paths=[str(src)]))
    assert result.point is not None
    restore_files(memory_repo, result.point, str(tmp_path / "t"))
    target = restored(tmp_path / "t", src) / "inside"
    assert target.read_bytes() == b"linked from outside" and os.stat(target).st_nlink == 1


def test_hard_links_restored_with_include(tmp_path: Path, memory_repo: Repository) -> None:
    src = tmp_path / "src"
    write_file(src / "a" / "first", random_bytes(5 * 1024 * 1024, 1))
    (src / "b").mkdir()
    os.link(src / "a" / "first", src / "b" / "second")
    os.link(src / "a" / "first", src / "b" / "third")
    result = backup_files(memory_repo, BackupRequest(paths=[str(src)]))
    assert result.point is not None
    # Only b/ is restored: its two names still share one inode.
    restore_files(memory_repo, result.point, str(tmp_path / "t"), includes=[str(src / "b")])
    root = restored(tmp_path / "t", src)
    assert not (root / "a").exists()
    assert os.stat(root / "b" / "second").st_ino == os.stat(root / "b" / "third").st_ino
    assert (root / "b" / "third").read_bytes() == random_bytes(5 * 1024 * 1024, 1)
    with pytest.raises(PathNotFound):
        restore_files(memory_repo, result.point, str(tmp_path / "u"), includes=["/nope"])


def test_many_small_files_in_many_directories(tmp_path: Path, memory_repo: Repository) -> None:
    """Small files travel in batches across directories (and reused descriptor
    numbers); hard links between batches settle to their first name's content."""
    src = tmp_path / "src"
    for d in range(150):
        for f in range(12):
            size = (d * 37 + f * 101) % 5000
            write_file(src / f"d{d % 10}" / f"sub{d}" / f"f{f}", random_bytes(size, d * 100 + f))
    for i in range(0, 150, 7):  # hard links from one directory into another
        os.link(src / f"d{i % 10}" / f"sub{i}" / "f3", src / f"d{(i + 3) % 10}" / f"link{i}")
    result = backup_files(memory_repo, BackupRequest(paths=[str(src)]))
    assert result.point is not None and result.summary.warnings == []
    restore_files(memory_repo, result.point, str(tmp_path / "t"))
    assert walk_differences(src, restored(tmp_path / "t", src), check_atime=False) == []


def test_times_before_1970_and_far_in_the_future(tmp_path: Path, memory_repo: Repository) -> None:
    src = tmp_path / "src"
    old = write_file(src / "old", b"old")
    new = write_file(src / "new", b"new")
    os.utime(old, ns=(-1_234_567_890_123, -987_654_321_987))
    os.utime(new, ns=(4_102_444_800_123_456_789, 4_102_444_800_987_654_321))  # year 2100
    result = backup_files(memory_repo, BackupRequest(paths=[str(src)]))
    assert result.point is not None
    restore_files(memory_repo, result.point, str(tmp_path / "t"))
    for path in (old, new):
        st = os.stat(restored(tmp_path / "t", src) / path.name)
        assert (st.st_atime_ns, st.st_mtime_ns) == (
            os.stat(path).st_atime_ns,
            os.stat(path).st_mtime_ns,
        )


def test_repeated_content_within_a_file_is_stored_once(
    tmp_path: Path, memory_repo: Repository
) -> None:
    src = tmp_path / "src"
    block = random_bytes(6 * 1024 * 1024, 7)
    data = block * 4
    write_file(src / "repeated.bin", data)
    result = backup_files(memory_repo, BackupRequest(paths=[str(src)]))
    assert result.point is not None
    assert result.summary.data_added < len(data) / 2
    restore_files(memory_repo, result.point, str(tmp_path / "t"))
    assert (restored(tmp_path / "t", src) / "repeated.bin").read_bytes() == data
