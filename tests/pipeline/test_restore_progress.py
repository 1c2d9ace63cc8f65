"""Restore's progress: totals known from the start, reached at the end, the
current file named; the same over a target that already holds the tree."""

from __future__ import annotations

from pathlib import Path

from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.restore import HowToRestore, restore_files
from strongroom.types import Progress
from tests.helpers.tree import make_small_tree


def test_progress_runs_up_to_the_totals(tmp_path: Path, memory_repo: Repository) -> None:
    src = tmp_path / "src"
    files = make_small_tree(src)
    point = backup_files(memory_repo, BackupRequest(paths=[str(src)])).point
    assert point is not None
    for how in (HowToRestore(), HowToRestore("if-changed")):  # fresh, then over the tree
        seen: list[tuple[int | None, int | None, int, int, str]] = []

        def progress(
            p: Progress, seen: list[tuple[int | None, int | None, int, int, str]] = seen
        ) -> None:
            seen.append((p.files_total, p.bytes_total, p.files_done, p.bytes_done, p.current))

        restore_files(memory_repo, point, str(tmp_path / "t"), progress=progress, how=how)
        total = (len(files), sum(len(d) for d in files.values()))
        assert seen and all(s[:2] == total for s in seen)
        assert seen[-1][2:4] == total
        assert seen[-1][4].startswith(str(src))
