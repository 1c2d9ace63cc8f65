"""Work queues for the restore and check readers: `--jobs 1` runs in the calling thread.

`InlineWork` has `OrderedWork`'s interface (submit, then, finish, a context
manager) but runs each job at once on the calling thread and sinks it there:
no pool, no thread, the same order. `work_queue` picks one for a job count,
so `--jobs 1` is the single-threaded baseline that `--jobs N` is compared
with (docs/performance.md, "Restore and check on both cores").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from strongroom.pipeline.ordered import OrderedWork


class WorkQueue(Protocol):
    def submit(self, job: Callable[[], Any], sink: Callable[[Any], None]) -> None: ...

    def then(self, callback: Callable[[], None]) -> None: ...

    def finish(self) -> None: ...

    def __enter__(self) -> WorkQueue: ...

    def __exit__(self, exc_type: object, *rest: object) -> None: ...


class InlineWork:
    """Every job runs and is sunk inside `submit`; a callback runs inside `then`."""

    def submit(self, job: Callable[[], Any], sink: Callable[[Any], None]) -> None:
        sink(job())

    def then(self, callback: Callable[[], None]) -> None:
        callback()

    def finish(self) -> None:
        """Nothing is ever queued."""

    def __enter__(self) -> InlineWork:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        return None


def work_queue(workers: int, depth: int) -> WorkQueue:
    """`InlineWork` for one worker, else an `OrderedWork` of `workers` threads."""
    if workers <= 1:
        return InlineWork()
    return OrderedWork(workers, depth)
