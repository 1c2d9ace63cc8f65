"""Bandwidth limits (`--limit-read`, `--limit-upload`): one token bucket per
limit, shared by every thread of one job.

Contract of `TokenBucket.take(n)`: called AFTER `n` bytes moved (read or
written), it returns once they fit the rate, sleeping as long as needed, never
while holding its lock (a sleeping thread does not stop another from
reserving its own turn). Each take reserves n / rate seconds on the bucket's
timeline, in arrival order, and sleeps until its reservation ends: a burst of
threads is spread evenly and the long-run rate is exact. The bucket starts
empty; time a slow caller spent (reading, hashing) counts as credit up to
`burst` seconds, so a caller slower than the rate is not slowed further, and
one that pauses longer cannot spend more than `burst` seconds of rate at once.
Over a few seconds the rate holds within a few per cent (tests/test_bandwidth.py).
A take larger than the rate (a 16 MiB pack under 1 MiB/s) simply waits longer.

Written here rather than taken from a library: the libraries at hand
(pyrate-limiter and the like) count requests in windows, and a byte rate with
shared reservations is a dozen lines.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

_RATE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*(/s)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def rate_bytes(text: str) -> int:
    """Bytes per second as users type a size (`50M` = 50 MiB/s; K, M, G, T are
    powers of 1024; an optional `/s`), like cli/units.py's sizes; ValueError
    for anything else or for 0."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a rate (examples: 50M, 512K, 1G: bytes per second)")
    value = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: a rate must be more than 0")
    return value


class TokenBucket:
    """A byte rate shared by threads (the module docstring has the contract).

    `clock` and `sleep` are injectable so tests run on a fake clock."""

    def __init__(
        self,
        rate: float,
        burst: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock()  # where the reservations end; the bucket starts empty
        self.taken = 0
        self.waited = 0.0

    def take(self, n: int) -> float:
        """Account `n` bytes just moved, waiting until they fit the rate; seconds waited."""
        if n <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._next = max(self._next, now - self.burst) + n / self.rate
            self.taken += n
            wait = self._next - now
        if wait <= 0:
            return 0.0
        self._sleep(wait)
        with self._lock:
            self.waited += wait
        return wait
