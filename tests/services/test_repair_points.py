"""repair points --forget deletes points only under a lock that still holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from strongroom.errors import RepositoryLocked
from strongroom.model.point import RecoveryPoint
from strongroom.repository import locks as locks_module
from strongroom.repository.repo import Repository
from strongroom.services.repair import repair_points


def test_forget_with_a_lapsed_lock_forgets_nothing(memory_repo: Repository) -> None:
    """A point whose root tree is lost is forgotten by `--forget`; paused past
    the stale age (another repair or prune may run now), nothing is deleted."""
    lost_root = RecoveryPoint(
        kind="files",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        host="h",
        user="u",
        paths=["/data"],
        tree="00" * 32,  # in no pack
        tags=[],
        id="",
    )
    pid = memory_repo.save_point(lost_root.to_doc())
    memory_repo.held_lock = memory_repo.lock(exclusive=True)
    memory_repo.held_lock._last_refresh -= 2 * locks_module.STALE_SECONDS  # paused
    with pytest.raises(RepositoryLocked):
        repair_points(memory_repo, forget=True)
    assert memory_repo.list_point_ids() == [pid]
    memory_repo.held_lock.release()
