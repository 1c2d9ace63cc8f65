"""Reading a server's point list, which is cached (services/dashboard.py: a
listing is up to `ttl` = 2 s old): a test that just committed a point waits
for it to be listed instead of assuming 2 s have passed since the last listing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Points = list[dict[str, Any]]


def points_listing(get: Callable[[], Points], until: Callable[[Points], bool]) -> Points:
    """`get()` again (every 0.2 s, for up to 30 s) until `until` holds; the last answer."""
    deadline = time.monotonic() + 30
    while True:
        points = get()
        if until(points) or time.monotonic() > deadline:
            return points
        time.sleep(0.2)
