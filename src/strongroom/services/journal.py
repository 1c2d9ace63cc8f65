"""The change journal of a directory tree as use cases: run its tracker, show its
status, and take one journal-driven backup cycle.

`journal_cycle` is the protocol of trackers/journal.py end to end: take S (the
tracker's barrier), read the changes up to S, back up only those paths against
the parent point (or, when the journal is out of sync or there is no parent,
the full metadata comparison that repairs it), and commit S only once the point
is recorded. A cycle that fails commits nothing: its changes stay for the next.
"""

from __future__ import annotations

import os
import threading

from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, BackupResult, backup_files
from strongroom.trackers.journal import OUT_OF_SYNC, Journal
from strongroom.trackers.journal_tracker import run_tracker


def journal_folder(state: str | os.PathLike[str]) -> str:
    """Where a source's journal lives inside its state folder."""
    return os.path.join(os.fspath(state), "journal")


def run_journal(tree: str, state: str, stop: threading.Event, backend: str = "auto") -> None:
    """Track `tree` into `state`'s journal until `stop` is set (foreground), with
    `backend` (auto: fanotify where it works, inotify otherwise)."""
    run_tracker(tree, journal_folder(state), stop, backend=backend)


def journal_status(state: str) -> dict[str, object]:
    return Journal(journal_folder(state)).status()


def journal_cycle(
    repo: Repository, tree: str, state: str, req: BackupRequest | None = None, wait: float = 10.0
) -> tuple[BackupResult, bool]:
    """One cycle of `tree`; returns the backup and whether it was journal-driven
    (False: the full comparison ran). The point's summary has `journal_sequence`."""
    journal = Journal(journal_folder(state))
    seq = journal.take_sequence(wait)
    changes = journal.changes_up_to(seq)
    request = req or BackupRequest(paths=[tree])
    request.paths = [tree]
    request.journal_sequence = seq
    request.changed_paths = None if changes is OUT_OF_SYNC else set(changes)  # type: ignore[arg-type]
    result = backup_files(repo, request)
    if result.point is not None:
        journal.commit(seq)
    return result, request.changed_paths is not None
