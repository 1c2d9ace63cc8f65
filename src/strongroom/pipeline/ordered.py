"""An ordered work queue: parallel jobs, results consumed in submission order.

The backup and restore pipelines submit chunk jobs to a thread pool and
interleave plain callbacks (finish a file, finish a directory). Results are
handed to `sink` strictly in order, and a callback runs only once everything
submitted before it is done, which gives bounded memory (at most `depth`
jobs in flight) without a barrier at every file or directory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class OrderedWork:
    def __init__(self, workers: int, depth: int) -> None:
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="work")
        self._depth = max(1, depth)
        self._queue: deque[tuple[Future[Any] | None, Callable[[Any], None]]] = deque()
        self._in_flight = 0

    def submit(self, job: Callable[[], Any], sink: Callable[[Any], None]) -> None:
        """Run `job` on a worker; later call `sink(result)` on this thread, in order."""
        while self._in_flight >= self._depth:
            self._drain_one()
        self._queue.append((self._pool.submit(job), sink))
        self._in_flight += 1
        self._drain_ready()

    def submit_future(self, fut: Future[Any], sink: Callable[[Any], None]) -> None:
        """Like `submit`, for work already running elsewhere (a worker process):
        `sink(fut.result())` on this thread, in order with everything else."""
        while self._in_flight >= self._depth:
            self._drain_one()
        self._queue.append((fut, sink))
        self._in_flight += 1
        self._drain_ready()

    def then(self, callback: Callable[[], None]) -> None:
        """Run `callback` on this thread once all earlier work has been sunk."""
        self._queue.append((None, lambda _: callback()))
        self._drain_ready()

    def _drain_ready(self) -> None:
        while self._queue:
            fut, _ = self._queue[0]
            if fut is not None and not fut.done():
                return
            self._drain_one()

    def _drain_one(self) -> None:
        fut, sink = self._queue.popleft()
        if fut is None:
            sink(None)
            return
        self._in_flight -= 1
        sink(fut.result())

    def finish(self) -> None:
        """Wait for and sink everything queued."""
        while self._queue:
            self._drain_one()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for fut, _ in self._queue:
                if fut is not None:
                    fut.cancel()
            self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> OrderedWork:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(cancel=exc_type is not None)
