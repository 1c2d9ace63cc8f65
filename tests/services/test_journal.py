"""services/journal.py: a journal cycle's decisions that a change set alone
cannot make right (the change journal names the path written, not every name
of the same file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.repository.repo import Repository
from strongroom.services.journal import journal_cycle
from strongroom.services.restore import restore_files
from tests.trackers.journal_fixtures import tracker

# Trackers size their kernel queues from sysctls that the overflow tests lower for
# a moment, and a fanotify mark sees the whole file system: every test that runs
# a tracker runs in one xdist worker, one after the other (CI: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("journal-trackers")


def test_a_file_written_through_one_of_its_hard_links_is_new_under_every_name(
    tmp_path: Path, memory_repo: Repository
) -> None:
    """inotify reports the write under the name used (b/g); a/f is the same inode
    but is not journaled: passing a/f through from the parent would restore the
    old bytes under a/f (and, linked, under b/g too)."""
    tree, state = tmp_path / "tree", tmp_path / "state"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "a" / "f").write_text("old")
    os.link(tree / "a" / "f", tree / "b" / "g")
    with tracker(tree, state):
        first, _ = journal_cycle(memory_repo, str(tree), str(state))
        assert first.point is not None
        with open(tree / "b" / "g", "w") as fh:
            fh.write("new bytes")
        result, driven = journal_cycle(memory_repo, str(tree), str(state))
    assert not driven  # the full comparison ran: it sees every name of the inode
    assert result.point is not None
    restore_files(memory_repo, result.point, str(tmp_path / "r"))
    restored = tmp_path / "r" / str(tree).lstrip("/")
    assert (restored / "a" / "f").read_text() == "new bytes"
    assert (restored / "b" / "g").read_text() == "new bytes"


def test_a_cycle_whose_parent_is_not_the_journals_last_point_compares_everything(
    tmp_path: Path, memory_repo: Repository
) -> None:
    """The journal's changes are relative to the point that committed its base.
    With that point forgotten (or a manual backup made since), the newest point
    is another one, and the journal's changes alone would lose what changed in
    between: the cycle runs the full comparison instead."""
    from strongroom.services.backup import BackupRequest, backup_files

    tree, state = tmp_path / "tree", tmp_path / "state"
    tree.mkdir()
    (tree / "a").write_text("one")
    (tree / "b").write_text("one")
    with tracker(tree, state):
        journal_cycle(memory_repo, str(tree), str(state))
        (tree / "a").write_text("two")
        second, driven = journal_cycle(memory_repo, str(tree), str(state))
        assert driven and second.point is not None
        memory_repo.delete_point(second.point.id)  # forgotten: `first` is newest again
        (tree / "b").write_text("two")
        _, driven = journal_cycle(memory_repo, str(tree), str(state))
        assert not driven
        # A manual backup in between (with an exclude) is no base for the journal either.
        backup_files(memory_repo, BackupRequest(paths=[str(tree)], excludes=["b"]))
        (tree / "a").write_text("three")
        fourth, driven = journal_cycle(memory_repo, str(tree), str(state))
        assert not driven
    assert fourth.point is not None
    restore_files(memory_repo, fourth.point, str(tmp_path / "r"))
    restored = tmp_path / "r" / str(tree).lstrip("/")
    assert (restored / "a").read_text() == "three"
    assert (restored / "b").read_text() == "two"
