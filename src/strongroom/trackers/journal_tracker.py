"""The tracker process of a directory tree: watch, append to the journal, answer
cycles' barriers. Runs in the foreground until `stop` is set (SIGTERM/SIGINT in
`strongroom journal run`).

Start-up rules (why): changes made while no tracker ran are unknown, so every
start marks the journal out of sync, after the watches exist (so everything
after the mark is recorded): "previous run did not end cleanly" when the
`running` marker of a killed run is still there, "tracker started" otherwise.
The marker is removed only by a clean stop.

The kernel queue is drained at most every `batch` seconds, not on each event:
a busy tree's events then cost one wake-up and a few reads per batch (and the
kernel merges repeats of an event still queued), which is what keeps the
tracker's CPU low under a steady write load. A cycle's barrier is not made to
wait for that: a second inotify watch on the journal folder (the "bell") wakes
the tracker as soon as the barrier file appears. Changes are buffered for at
most `flush_every` seconds, then appended and fsync'd in one batch (duplicates
within a batch dropped). A barrier (a cycle's `take_sequence`) is answered only
after the kernel queue was drained *after* the barrier file appeared and the
batch was fsync'd: every change made before the barrier is then at or below the
sequence answered.

Backend (`backend="auto"`): fanotify (trackers/fanotify.py: one mark on the
whole file system) when it works here, inotify (trackers/inotify.py: a watch
per directory) otherwise; `tracker.json` records which, and why fanotify was
not used.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import threading
import time
from pathlib import Path

from strongroom.atomic import atomic_write
from strongroom.errors import SourceError
from strongroom.trackers.fanotify import FsWatch
from strongroom.trackers.inotify import Change, FolderBell, TreeWatch
from strongroom.trackers.journal import BARRIER, BARRIER_DONE, INFO, MARKER, Journal, Kind

TRACKER_LOCK = "tracker.lock"
BACKENDS = ("auto", "fanotify", "inotify")

Watch = FsWatch | TreeWatch


def open_watch(tree: str | os.PathLike[str], backend: str = "auto") -> tuple[Watch, str | None]:
    """The watch of `tree` with `backend`, and (for "auto") why fanotify was not
    usable. An explicit backend that does not work raises SourceError."""
    if backend not in BACKENDS:
        raise SourceError(f"unknown tracker backend {backend!r} (auto, fanotify, inotify)")
    if backend == "inotify":
        return TreeWatch(tree), None
    try:
        return FsWatch(tree), None
    except SourceError as err:
        if backend == "fanotify":
            raise
        return TreeWatch(tree), str(err)


def run_tracker(
    tree: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    stop: threading.Event,
    *,
    batch: float = 0.25,
    flush_every: float = 0.5,
    ready: threading.Event | None = None,
    backend: str = "auto",
) -> None:
    """Track `tree` into the journal in `folder` until `stop` is set."""
    journal = Journal(folder)
    journal.create()
    lock_fd = os.open(Path(folder) / TRACKER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SourceError(f"{folder}: another tracker is running on this journal") from None
        marker = Path(folder) / MARKER
        unclean = marker.exists()
        watch, fallback = open_watch(tree, backend)
        try:
            _write_json(marker, {"pid": os.getpid(), "started": time.time()})
            _write_json(
                Path(folder) / INFO,
                {
                    "backend": watch.backend,
                    "tree": os.path.abspath(tree),
                    "pid": os.getpid(),
                    **({"fanotify_unavailable": fallback} if fallback else {}),
                },
            )
            reason = (
                "previous tracker run did not end cleanly"
                if unclean
                else "tracker started: changes while it was not running are unknown"
            )
            journal.mark_out_of_sync(reason)
            if ready is not None:
                ready.set()
            _loop(journal, watch, stop, batch, flush_every)
            journal.append(_dedupe(watch.read()))
            marker.unlink(missing_ok=True)
        finally:
            watch.close()
    finally:
        os.close(lock_fd)


def _loop(
    journal: Journal, watch: Watch, stop: threading.Event, batch: float, flush_every: float
) -> None:
    buffered: list[Change] = []
    last_flush = last_drain = time.monotonic()
    barrier = journal.folder / BARRIER
    bell = FolderBell(journal.folder)
    try:
        everything, bell_only = select.poll(), select.poll()
        everything.register(watch.fileno(), select.POLLIN)
        for poller in (everything, bell_only):
            poller.register(bell.fileno(), select.POLLIN)
        while not stop.is_set():
            ready = {fd for fd, _ in everything.poll(int(batch * 1000))}
            if bell.fileno() not in ready:
                wait = batch - (time.monotonic() - last_drain)
                if wait > 0:  # tree events only: let them gather until the batch is due
                    bell_only.poll(int(wait * 1000) + 1)
            bell.drain()
            token = _read_token(barrier)
            buffered += watch.read()  # drained after the barrier was seen
            now = last_drain = time.monotonic()
            if token is None and now - last_flush < flush_every:
                continue
            problem = watch.problem() if token is not None else None
            if problem is not None:
                buffered.append((Kind.OUT_OF_SYNC, problem.encode()))
            seq = journal.append(_dedupe(buffered))
            buffered, last_flush = [], now
            if token is not None:
                _write_bytes(journal.folder / BARRIER_DONE, f"{token} {seq}".encode())
                if _read_token(barrier) == token:
                    barrier.unlink(missing_ok=True)
    finally:
        bell.close()


def _dedupe(changes: list[Change]) -> list[Change]:
    """One record per (kind, path) in a batch: a file written in 1,000 calls is one
    `modified`. Order of first appearance is kept."""
    return list(dict.fromkeys(changes))


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (OSError, ValueError):
        return None


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _write_json(path: Path, doc: dict[str, object]) -> None:
    _write_bytes(path, json.dumps(doc).encode())
