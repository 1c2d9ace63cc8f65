"""What the NBD server grants its clients, and a log that cannot be flooded.

Every client of `serve` is local but not trusted: a VM's NBD client, a script,
anything that can reach the socket. `ServerLimits` bounds what one client, and
all of them together, can hold: connections (each has two threads), requests
and reply bytes in flight, pool workers, and how long a client may stall the
handshake or a reply. `LogThrottle` keeps a repeated event (refused clients,
accept failing for lack of file descriptors) to one line per interval with a
count, so a hostile client cannot fill the disk through the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from strongroom.errors import UsageError
from strongroom.nbd import protocol as p

DEFAULT_MAX_CLIENTS = 64
DEFAULT_WORKERS = 4
DEFAULT_CLIENT_TIMEOUT = 30.0
DEFAULT_MAX_REQUESTS = 16
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_TOTAL_BYTES = 512 << 20
LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on clients; the defaults suit a handful of readers (qemu-img, a VM).

    - `max_clients`: connections served at once (handshaking ones included);
      one more is accepted and closed at once, without a thread.
    - `workers`: pool threads that run export reads, shared round-robin.
    - `per_client_workers`: pool threads one client may occupy at once
      (default: all but one, so a newcomer always finds a free worker soon).
    - `max_requests` / `max_bytes`: requests and reply bytes one client may
      have outstanding (queued, executing or unsent); beyond them the server
      stops reading its socket, so TCP back-pressure holds the client.
    - `max_total_bytes`: reply bytes held for all clients together (memory);
      a client waiting for it is held by back-pressure like above.
    - `client_timeout`: seconds for the whole handshake, and for a reply send
      that makes no progress; then the client is dropped. None: no limit.
    - `idle_timeout`: seconds a negotiated client may send no request at all
      (None: forever, as a VM's idle disk needs).
    """

    max_clients: int = DEFAULT_MAX_CLIENTS
    workers: int = DEFAULT_WORKERS
    per_client_workers: int | None = None
    max_requests: int = DEFAULT_MAX_REQUESTS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    client_timeout: float | None = DEFAULT_CLIENT_TIMEOUT
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_clients < 1:
            raise UsageError(f"the client limit must be at least 1, not {self.max_clients}")
        if self.workers < 1:
            raise UsageError(f"an NBD server needs at least one worker, not {self.workers}")
        if self.per_client_workers is not None and self.per_client_workers < 1:
            raise UsageError("a client needs at least one worker")
        if self.max_requests < 1:
            raise UsageError("a client must be allowed at least one request in flight")
        if self.max_bytes < p.MAX_BLOCK:
            raise UsageError(f"the bytes in flight per client must be at least {p.MAX_BLOCK}")
        if self.max_total_bytes < self.max_bytes:
            raise UsageError("the bytes in flight for all clients must cover one client's")
        for what, value in (("client", self.client_timeout), ("idle", self.idle_timeout)):
            if value is not None and not 0 < value <= 86400:
                raise UsageError(f"the {what} timeout must be between 0 and 86400 seconds")

    @property
    def client_workers(self) -> int:
        """Pool threads one client may occupy at once."""
        if self.per_client_workers is not None:
            return min(self.per_client_workers, self.workers)
        return max(1, self.workers - 1)


class LogThrottle:
    """Logs an event at most once per `interval` seconds per key; the repeats in
    between are counted and the count is added to the next line. Thread-safe."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}

    def warning(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged less than an interval ago; True if logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._repeats[key] = self._repeats.get(key, 0) + 1
                return False
            repeats = self._repeats.pop(key, 0)
            self._last[key] = now
        if repeats:
            message += f" (and {repeats} more times since the last report)"
        self._log.warning("%s", message)
        return True


class Budget:
    """Counts requests and reply bytes outstanding; `acquire` waits while either is
    over its limit (one request of any size is always allowed)."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self._cond = threading.Condition()
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._count = 0
        self._bytes = 0

    def acquire(self, size: int) -> None:
        with self._cond:
            while self._count >= self._max_requests or (
                self._count and self._bytes + size > self._max_bytes
            ):
                self._cond.wait()
            self._count += 1
            self._bytes += size

    def release(self, size: int) -> None:
        with self._cond:
            self._count -= 1
            self._bytes -= size
            self._cond.notify_all()

    def wait_idle(self) -> None:
        with self._cond:
            while self._count:
                self._cond.wait()
