"""A full disk at any moment of a backup: StorageFull, and a consistent repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from strongroom.errors import StorageFull
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.maintenance import check
from strongroom.services.points import list_points
from strongroom.services.restore import restore_files
from strongroom.storage.local import LocalBackend
from strongroom.storage.testing import FaultyBackend
from tests.conftest import init_local_repository
from tests.helpers.cli import PASSWORD
from tests.helpers.compare import walk_differences
from tests.helpers.tree import make_small_tree, random_bytes, write_file

PW = PASSWORD.encode()
MiB = 1024 * 1024


def make_source(root: Path) -> None:
    make_small_tree(root)
    for i in range(4):
        write_file(root / f"big{i}.bin", random_bytes(9 * MiB, i))  # > 2 packs of 16 MiB


def bytes_a_backup_writes(tmp_path: Path, src: Path, repo_path: Path) -> int:
    """What a backup of `src` writes into a copy of the repository at
    `repo_path`: same keys, same chunker seed, so the same chunks and the same
    per-chunk compression choices (adaptive compression decides on samples, so
    another repository's cut points could store a chunk differently)."""
    shutil.copytree(repo_path, tmp_path / "measure")
    faulty = FaultyBackend(LocalBackend(tmp_path / "measure"), space=1 << 40)
    repo = Repository.open(faulty, PW)
    backup_files(repo, BackupRequest(paths=[str(src)]))
    repo.close()
    return (1 << 40) - faulty.space


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6, 0.95, 0.9999])
def test_backup_on_a_full_disk(tmp_path: Path, fraction: float) -> None:
    src = tmp_path / "src"
    make_source(src)
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    needed = bytes_a_backup_writes(tmp_path, src, repo_path)

    faulty = FaultyBackend(LocalBackend(repo_path), space=int(needed * fraction))
    repo = Repository.open(faulty, PW)
    with pytest.raises(StorageFull):
        backup_files(repo, BackupRequest(paths=[str(src)]))
    repo.close()

    # With the disk freed: the repository is consistent, holds no point, and the
    # next backup completes and restores exactly.
    repo = Repository.open(LocalBackend(repo_path), PW)
    assert list_points(repo) == []
    result = check(repo, read_data=True)
    assert result.report.ok, result.report.errors
    done = backup_files(repo, BackupRequest(paths=[str(src)]))
    assert done.point is not None
    if 0.5 < fraction < 0.99:
        # The disk filled up during the data packs: abandon() indexed those that
        # were stored (an index file still fits), and the next backup reuses them.
        # (Near the very end, the index file itself may not fit: nothing to reuse.)
        assert done.summary.data_added < 36 * MiB * 0.9
    restore_files(repo, done.point, str(tmp_path / "restore"))
    restored = tmp_path / "restore" / str(src).lstrip("/")
    assert walk_differences(src, restored, check_atime=False) == []
    assert check(repo, read_data=True).report.ok
    repo.close()
