"""The benchmarks run as scripts from ``bench/`` (so ``harness`` is a top-level package there):
put that folder on ``sys.path`` for these tests."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
