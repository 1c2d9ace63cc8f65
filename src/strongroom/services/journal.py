"""The change journal of a directory tree as use cases: run its tracker, show its
status, and take one journal-driven backup cycle.

`journal_cycle` is the protocol of trackers/journal.py end to end: take S (the
tracker's barrier), read the changes up to S, back up only those paths against
the parent point (or, when the journal is out of sync or there is no parent,
the full metadata comparison that repairs it), and commit S only once the point
is recorded. A cycle that fails commits nothing: its changes stay for the next.

A changed path that is a hard link (a non-directory with more than one link)
also makes the cycle a full comparison: the kernel reports a write under the
name it went through, and the file's other names, not journaled, would keep
the parent point's bytes.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable

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


def take_sequence(state: str, wait: float = 10.0) -> int:
    """The cycle's S (the tracker's barrier): the protection service takes it
    inside the quiesced instant and passes it to `journal_cycle`."""
    return Journal(journal_folder(state)).take_sequence(wait)


BackupRun = Callable[[BackupRequest, threading.Event | None], BackupResult]


def journal_cycle(
    repo: Repository | None,
    tree: str,
    state: str,
    req: BackupRequest | None = None,
    wait: float = 10.0,
    *,
    seq: int | None = None,
    read_seq: int | None = None,
    cancel: threading.Event | None = None,
    backup: BackupRun | None = None,
) -> tuple[BackupResult, bool]:
    """One cycle of `tree`; returns the backup and whether it was journal-driven
    (False: the full comparison ran). The point's summary has `journal_sequence`.
    `seq`: S taken already (at the quiesced instant); else it is taken now.

    `read_seq` (>= S, with `req.read_from` a snapshot taken after S): the paths
    changed up to it are read, and S only is committed. A change between S and
    the snapshot is then in the point as the snapshot has it (the point is the
    snapshot's instant exactly), and one after the snapshot, read from the
    snapshot as it was before, stays in the journal for the next cycle.

    `backup` runs the request instead of `backup_files(repo, ...)` (the agent's
    backup through its server: services/agent_backup.py); `repo` is then None."""
    journal = Journal(journal_folder(state))
    if seq is None:
        seq = journal.take_sequence(wait)
    changes = journal.changes_up_to(max(seq, read_seq or seq))
    read_root = req.read_from if req is not None and req.read_from else tree
    if changes is not OUT_OF_SYNC and _hard_linked(read_root, changes):  # type: ignore[arg-type]
        changes = OUT_OF_SYNC
    request = req or BackupRequest(paths=[tree])
    request.paths = [tree]
    request.journal_sequence = seq
    request.journal_base = journal.read().base
    request.changed_paths = None if changes is OUT_OF_SYNC else set(changes)  # type: ignore[arg-type]
    if backup is not None:
        result = backup(request, cancel)
    elif repo is not None:
        result = backup_files(repo, request, cancel=cancel)
    else:
        raise ValueError("journal_cycle: a repository or a backup to run")
    if result.point is not None:
        journal.commit(seq)
    return result, request.changed_paths is not None


def _hard_linked(tree: str, paths: set[str]) -> bool:
    """Whether a changed path is now a non-directory with other names."""
    for rel in paths:
        try:
            st = os.lstat(os.path.join(tree, rel))
        except OSError:
            continue  # gone: dropped by the backup
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            return True
    return False
