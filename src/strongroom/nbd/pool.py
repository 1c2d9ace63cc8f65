"""A bounded worker pool shared fairly by the server's clients.

`ThreadPoolExecutor` serves one FIFO queue: a client that pipelines sixteen
32 MiB reads puts them all before the next client's 4 KiB read, and with as
many busy clients as workers nobody else runs. Here every owner (a session)
has its own queue; idle workers take the next job round-robin across owners,
skipping an owner that already occupies `per_owner` workers. So a newcomer's
request runs as soon as any worker finishes its current job, however deep the
other queues are. Jobs never touch a client's socket (replies are sent by the
session's own sender thread), so no client can hold a worker by not reading.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable

_log = logging.getLogger(__name__)

Job = Callable[[], None]


class PoolClosed(RuntimeError):
    """The pool is shut down: the server is stopping."""


class FairPool:
    """`workers` threads (started on demand) running jobs round-robin across owners."""

    def __init__(self, workers: int, per_owner: int, *, name: str = "nbd-worker") -> None:
        self._max_workers = workers
        self._per_owner = max(1, min(per_owner, workers))
        self._name = name
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[Job]] = {}
        self._running: dict[Hashable, int] = {}
        self._ready: deque[Hashable] = deque()  # owners with queued jobs, in turn order
        self._threads: list[threading.Thread] = []
        self._idle = 0  # workers waiting (or woken and not yet running again)
        self._queued = 0
        self._closed = False

    def submit(self, owner: Hashable, job: Job) -> None:
        """Queue `job` for `owner`; raises PoolClosed after `shutdown`. A job must not
        raise (an exception is logged as a bug and swallowed)."""
        with self._cond:
            if self._closed:
                raise PoolClosed("the worker pool is shut down")
            queue = self._queues.get(owner)
            if queue is None:
                queue = self._queues[owner] = deque()
            if not queue:
                self._ready.append(owner)
            queue.append(job)
            self._queued += 1
            self._cond.notify()
            if self._idle < self._queued and len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._threads.append(thread)
                thread.start()

    def shutdown(self) -> None:
        """Refuse new jobs, run those queued, join the workers. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join()

    @property
    def threads(self) -> int:
        with self._cond:
            return len(self._threads)

    def _next(self) -> tuple[Hashable, Job] | None:
        """The next owner's job (caller holds the lock); None if none may run now."""
        for _ in range(len(self._ready)):
            owner = self._ready.popleft()
            if self._running.get(owner, 0) >= self._per_owner:
                self._ready.append(owner)
                continue
            queue = self._queues[owner]
            job = queue.popleft()
            self._queued -= 1
            if queue:
                self._ready.append(owner)
            else:
                del self._queues[owner]
            self._running[owner] = self._running.get(owner, 0) + 1
            return owner, job
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
                while picked is None:
                    if self._closed and not self._ready:
                        return
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                    picked = self._next()
            owner, job = picked
            try:
                job()
            except Exception:
                _log.exception("an NBD pool job failed")
            finally:
                with self._cond:
                    left = self._running[owner] - 1
                    if left:
                        self._running[owner] = left
                    else:
                        del self._running[owner]
                    if self._ready:
                        self._cond.notify()
