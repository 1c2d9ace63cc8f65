"""Rounds and what is reported of them: the median, the spread (min-max), ratios.

The house rule: the same data in one run, three rounds, median ratios (this machine is noisy,
±20 % run to run). A warm-up round runs the whole scenario once and is thrown away (first-touch
costs: page cache, the interpreter's bytecode cache, a tool's own cache).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from harness.spawn import log

T = TypeVar("T")


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over the rounds."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        found = list(values)
        if not found:
            raise ValueError("no values")
        return cls(statistics.median(found), min(found), max(found), len(found))

    def relative(self) -> float:
        """(high - low) / median: 0.2 is the ±10 % this machine gives on a good day."""
        return (self.high - self.low) / self.median if self.median else 0.0

    def text(self, digits: int = 2) -> str:
        """``1.23`` for one round, ``1.23 (1.10-1.40)`` for more."""
        mid = f"{self.median:.{digits}f}"
        if self.rounds < 2:
            return mid
        return f"{mid} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def median_index(values: Sequence[float]) -> int:
    """Index of the median value (the lower middle for an even count): the round whose notes
    and details go with the median time."""
    if not values:
        raise ValueError("no values")
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]


def run_rounds(rounds: int, one: Callable[[int], T], warmup: int = 0, what: str = "run") -> list[T]:
    """Call ``one(index)`` for ``warmup`` thrown-away rounds (index 0, ...), then for
    ``index`` 1..rounds; returns the kept results in order."""
    for i in range(warmup):
        log(f"[warm-up {i + 1}/{warmup}]")
        one(0)
    kept = []
    for index in range(1, rounds + 1):
        log(f"[{what} {index}/{rounds}]")
        kept.append(one(index))
    return kept


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is unknown or b is 0."""
    return a / b if a is not None and b else None


def format_ratio(value: float | None, digits: int = 2) -> str:
    """``1.23x``, or ``n/a`` for an unknown ratio."""
    return "n/a" if value is None else f"{value:.{digits}f}x"


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def mb(value: object, digits: int = 1) -> str:
    """Bytes as 10^6-byte MB, or ``?`` when a summary did not have the field."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value / 1e6:.{digits}f}"
    return "?"
