"""Staying out of the way: a job's priority and bandwidth limits, by kind.

Defaults (docs/performance.md, "Staying out of the way"): VM backups and
protect jobs run at `idle` priority (they share the machine with running
VMs and applications: their writers' latency is what the user sees); file
and image backups at `normal` (someone usually waits for them). A setting
(`--priority`, the config file's `priority`, STRONGROOM_PRIORITY) overrides
the default of every kind. Limits have no default: `--limit-read` holds the
block reads of image and VM backups, `--limit-upload` the bytes written to
the repository's storage (local, S3, SFTP, rclone) or to a protect chain,
`--limit-download` the bytes read from the repository's storage.

Priority is applied early, once per job (strongroom/priority.py): by the CLI
to its whole process before the command's work starts, by the agent to the
thread it runs the job on (the threads the job starts inherit it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from strongroom.priority import Priority, apply_priority

if TYPE_CHECKING:
    from strongroom.bandwidth import TokenBucket
    from strongroom.sources.block import BlockSource
    from strongroom.storage.base import Backend

JobKind = Literal["files", "image", "vm", "protect", "restore"]
T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_PRIORITY: dict[str, Priority] = {
    "files": Priority.NORMAL,
    "image": Priority.NORMAL,
    "vm": Priority.IDLE,
    "protect": Priority.IDLE,
    "restore": Priority.NORMAL,
}


def job_priority(kind: JobKind, chosen: Priority | None) -> Priority:
    """The priority a job of `kind` runs at: `chosen` (a setting), else the kind's default."""
    return chosen if chosen is not None else DEFAULT_PRIORITY[kind]


def start_job(kind: JobKind, chosen: Priority | None, scope: str = "process") -> list[str]:
    """Apply the job's priority (`scope`: "process" or "thread"); one-line warnings."""
    return apply_priority(job_priority(kind, chosen), scope)


def read_bucket(rate: int | None) -> TokenBucket | None:
    """A bucket for one job's source reads (shared by its disks), None without a limit."""
    if rate is None:
        return None
    from strongroom.bandwidth import TokenBucket

    return TokenBucket(rate)


def limit_reads(source: BlockSource, bucket: TokenBucket | None) -> BlockSource:
    """`source` with its reads held to `bucket` (itself when None)."""
    from strongroom.sources.throttle import read_limited

    return read_limited(source, bucket)


def limit_backend(backend: Backend, upload: int | None, download: int | None = None) -> Backend:
    """`backend` with its writes held to `upload` bytes/s and its reads to
    `download` (itself when both are None)."""
    if upload is None and download is None:
        return backend
    from strongroom.bandwidth import TokenBucket
    from strongroom.storage.throttle import throttled

    return throttled(
        backend,
        None if upload is None else TokenBucket(upload),
        None if download is None else TokenBucket(download),
    )


def run_at(kind: JobKind, chosen: Priority | None, body: Callable[[], T]) -> T:
    """`body()` at the priority of a job of `kind`, without changing the
    caller's: on a thread of its own (which the job's threads inherit from),
    its result returned or its exception raised here. At `normal`, on the
    calling thread. What the system refuses is logged, and the job runs."""
    level = job_priority(kind, chosen)
    if level is Priority.NORMAL:
        return body()
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        for warning in apply_priority(level, scope="thread"):
            log.warning("%s", warning)
        try:
            done.append(body())
        except BaseException as err:  # handed to the caller below
            failed.append(err)

    worker = threading.Thread(target=run, name=f"{kind}-job-{level}")
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return done[0]
