"""The machine's load while a benchmark runs, sampled in a background thread: a window with a
busy CPU or a flood of dirty pages tells noise from its cause (another helper's job, the
kernel's write-back) when a latency or a timing looks wrong."""

from __future__ import annotations

import math
import threading
import time

from harness.workspace import KIB


class SystemSampler:
    """Samples the machine every 0.2 s: CPU busy (all processes, from /proc/stat) and dirty or
    under-writeback page cache (/proc/meminfo), to tell a window's noise from its cause."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int, int, int]] = []  # t, busy, total, dirty, wb
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _sample() -> tuple[float, int, int, int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total = sum(fields[:8])
        mem: dict[str, int] = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Dirty", "Writeback"):
                    mem[key] = int(rest.split()[0])
        return time.time(), total - idle, total, mem.get("Dirty", 0), mem.get("Writeback", 0)

    def _loop(self) -> None:
        while not self._halt.wait(0.2):
            try:
                self.samples.append(self._sample())
            except (OSError, ValueError, IndexError):
                pass

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)

    def window(self, a: float, z: float) -> dict[str, float]:
        """CPU busy % of the machine, and the most page cache dirty or under writeback (MB)."""
        inside = [x for x in self.samples if a <= x[0] <= z]
        if len(inside) < 2:
            return {}
        busy = inside[-1][1] - inside[0][1]
        total = inside[-1][2] - inside[0][2]
        return {
            "cpu_busy_pct": 100.0 * busy / total if total else math.nan,
            "dirty_max_mb": max(x[3] for x in inside) * KIB / 1e6,
            "writeback_max_mb": max(x[4] for x in inside) * KIB / 1e6,
        }
