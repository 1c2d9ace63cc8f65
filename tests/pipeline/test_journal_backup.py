"""The journal-driven file backup: it reads only the changed files and yields the
point a full walk would; and the cycle protocol against a real tracker (kill
between and during cycles: the full comparison runs, no change is missed)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from strongroom.model.tree import decode_wires
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.journal import journal_cycle
from strongroom.services.restore import restore_files
from tests.helpers.compare import walk_differences
from tests.helpers.inotify import FileReads
from tests.trackers.journal_fixtures import BACKENDS, make_tree, tracker, write_some

# Trackers size their kernel queues from sysctls that the overflow tests lower for
# a moment, and a fanotify mark sees the whole file system: every test that runs
# a tracker runs in one xdist worker, one after the other (CI: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("journal-trackers")


def _tree(repo: Repository, tree_id: bytes) -> list[dict[str, Any]]:
    """A tree, recursively, without atimes (a full walk sees the atime of entries
    the journal-driven one does not look at)."""
    out = []
    for wire in decode_wires(repo.load_chunk(tree_id, BlobType.TREE)):
        wire = {k: v for k, v in wire.items() if k != "at"}
        if "st" in wire:
            wire["st"] = _tree(repo, wire["st"])
        out.append(wire)
    return out


def _point_tree(repo: Repository, result: Any) -> list[dict[str, Any]]:
    return _tree(repo, bytes.fromhex(result.point.tree))


def test_random_change_sets_equal_a_full_walk_and_read_only_changed_files(
    tmp_path: Path, memory_repo: Repository
) -> None:
    src, rng = tmp_path / "src", random.Random(int(os.environ.get("JSEED", "7")))
    make_tree(src, rng)
    parent = backup_files(memory_repo, BackupRequest(paths=[str(src)])).point
    assert parent is not None
    for _ in range(6):
        changed = write_some(src, rng, rng.randrange(1, 12))
        with FileReads(src) as reads:
            journaled = backup_files(
                memory_repo,
                BackupRequest(
                    paths=[str(src)], parent=parent.id, changed_paths=changed, journal_sequence=5
                ),
            )
            read = reads.reads()
        assert read <= changed, read - changed  # nothing outside the change set is read
        full = backup_files(memory_repo, BackupRequest(paths=[str(src)], parent=parent.id))
        # /tmp and its parents change under other processes: compare the tree only
        assert _sub(_point_tree(memory_repo, journaled), src) == _sub(
            _point_tree(memory_repo, full), src
        )
        assert journaled.point is not None and full.point is not None
        assert journaled.point.summary["journal_sequence"] == 5
        parent = journaled.point


@pytest.mark.parametrize("backend", BACKENDS)
def test_cycles_with_a_tracker_killed_between_and_during_cycles(
    tmp_path: Path, memory_repo: Repository, backend: str
) -> None:
    tree, state, rng = tmp_path / "tree", tmp_path / "state", random.Random(3)
    make_tree(tree, rng, files=20)

    def check_restores(result: Any, n: int) -> None:
        target = tmp_path / f"r{n}"
        restore_files(memory_repo, result.point, str(target))
        restored = target / str(tree).lstrip("/")
        assert walk_differences(tree, restored, check_atime=False, check_root=False) == []

    with tracker(tree, state, backend) as t:
        result, driven = journal_cycle(memory_repo, str(tree), str(state))
        assert not driven  # the tracker's start: full comparison (the first point)
        check_restores(result, 0)

        changed = write_some(tree, rng, 10)
        with FileReads(tree) as reads:
            result, driven = journal_cycle(memory_repo, str(tree), str(state))
            assert driven and reads.reads() <= changed
        check_restores(result, 1)

        t.kill()  # between cycles
        write_some(tree, rng, 5)  # nobody sees these
        t.start()
        write_some(tree, rng, 5)
        result, driven = journal_cycle(memory_repo, str(tree), str(state))
        assert not driven and t.journal.status()["in_sync"] is True
        check_restores(result, 2)

        # killed during a cycle: S was taken, the point is made, the commit never happens
        write_some(tree, rng, 5)
        seq = t.journal.take_sequence()
        assert t.journal.changes_up_to(seq) != set()
        t.kill()
        write_some(tree, rng, 5)
        t.start()
        result, driven = journal_cycle(memory_repo, str(tree), str(state))
        assert not driven
        check_restores(result, 3)
        assert result.point is not None and result.point.summary["journal_sequence"] > seq

        write_some(tree, rng, 8)
        result, driven = journal_cycle(memory_repo, str(tree), str(state))
        assert driven
        check_restores(result, 4)


def test_only_the_journaled_paths_are_looked_at(tmp_path: Path, memory_repo: Repository) -> None:
    """A change the journal does not name is not seen (so nothing else was compared):
    the point keeps the parent's version until a full comparison."""
    src = tmp_path / "src"
    make_tree(src, random.Random(1), files=10)
    parent = backup_files(memory_repo, BackupRequest(paths=[str(src)])).point
    assert parent is not None
    (src / "a" / "f-new").write_text("unjournaled")
    (src / "c" / "named").write_text("journaled")
    req = BackupRequest(paths=[str(src)], parent=parent.id, changed_paths={"c/named"})
    result = backup_files(memory_repo, req)
    assert (result.summary.files_new, result.summary.bytes_read) == (1, len("journaled"))
    assert _names(_point_tree(memory_repo, result), src / "a") == ["b", "f0.bin"]
    assert result.point is not None
    full = backup_files(memory_repo, BackupRequest(paths=[str(src)], parent=result.point.id))
    assert "f-new" in _names(_point_tree(memory_repo, full), src / "a")


def _sub(tree: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    for part in path.parts[1:]:
        tree = next(w for w in tree if w["n"] == part.encode())["st"]
    return tree


def _names(tree: list[dict[str, Any]], path: Path) -> list[str]:
    return [w["n"].decode() for w in _sub(tree, path)]
