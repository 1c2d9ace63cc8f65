"""Which seeds a file backup uses: a damaged seed among the automatic
candidates is skipped with a warning, not a reason to fail the backup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.errors import IntegrityError
from strongroom.model.kinds import PointKind
from strongroom.model.point import now
from strongroom.model.seed import Seed, SeedKind
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.seed_add import SeedRequest, add_seed
from strongroom.services.seeds import record_seed
from tests.helpers.seed_trees import build


def _broken_seed(repo: Repository) -> None:
    """A seed whose file tree is not in the repository (its pack lost)."""
    record_seed(
        repo,
        Seed(
            name="broken",
            kind=SeedKind.APP,
            content=PointKind.FILES,
            tree=os.urandom(32).hex(),
            time=now(),
        ),
    )


def test_a_damaged_candidate_seed_is_skipped_with_a_warning(
    tmp_path: Path, local_repo: Repository
) -> None:
    m = build(tmp_path / "trees")
    add_seed(local_repo, SeedRequest("os", [str(m.os_seed)], SeedKind.OS))
    _broken_seed(local_repo)

    result = backup_files(local_repo, BackupRequest(paths=[str(m.machine)], host="h"))
    assert result.point is not None
    assert result.seeds is not None
    assert [u.name for u in result.seeds.used] == ["os"]
    assert any("broken" in w for w in result.summary.warnings)


def test_a_damaged_pinned_seed_fails_the_backup(tmp_path: Path, local_repo: Repository) -> None:
    m = build(tmp_path / "trees")
    _broken_seed(local_repo)
    with pytest.raises(IntegrityError, match="seed broken cannot be read"):
        backup_files(local_repo, BackupRequest(paths=[str(m.machine)], host="h", seeds=["broken"]))
