"""check beside a backup: the points it walks are listed before the index is read.

A backup writes its packs, then the index files naming them, then its point. A
check that read the index first and listed points afterwards could meet a point
committed in between whose chunks its index snapshot lacks, and report damage
that is not there (a flaky "check beside a running backup" found it).
"""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.repository.repo import Repository
from strongroom.services import maintenance
from tests.repository.test_check_manifests import _file, _save


def test_a_point_committed_while_check_reads_the_index_is_no_damage(
    memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(memory_repo, [_file(b"a", memory_repo).to_wire()])
    original = maintenance.check_structure

    def structure_then_a_backup_commits(repo: Repository, report: Any) -> None:
        original(repo, report)  # the index as it was before the backup below
        node = _file(b"b", memory_repo, b"written by a concurrent backup")
        _save(memory_repo, [node.to_wire()])  # packs, index, point: a backup's write order

    monkeypatch.setattr(maintenance, "check_structure", structure_then_a_backup_commits)
    result = maintenance.check(memory_repo)
    assert result.report.ok, result.report.errors
