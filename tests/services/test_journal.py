"""services/journal.py: a journal cycle's decisions that a change set alone
cannot make right (the change journal names the path written, not every name
of the same file)."""

from __future__ import annotations

import os
from pathlib import Path

from strongroom.repository.repo import Repository
from strongroom.services.journal import journal_cycle
from strongroom.services.restore import restore_files
from tests.trackers.journal_fixtures import tracker


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
