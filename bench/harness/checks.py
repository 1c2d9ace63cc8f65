"""Targets and result checks.

A *target* is a figure the issue asks for (a ratio to a peer, a throughput), printed PASS/FAIL
beside the measurement; ``None`` when it cannot be computed (a phase failed or did not run).
A *result check* is the scenario asserting that what a tool produced is right (a restored tree
equal to the source, an exported image equal to the disk): it goes through ``Failures``, and a
failed check makes the benchmark exit with status 1, whatever the timings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.spawn import log
from harness.stats import verdict

CHECK_HEADER = ["target", "measured", "wanted", "result"]
CHECK_ALIGN = "lrll"


@dataclass
class Check:
    """One target: ``value`` in ``unit`` ("x" for a ratio), ``target`` as printed ("-" for an
    informative line), ``passed`` None when not computable or informative."""

    metric: str
    value: float | None
    unit: str
    target: str
    passed: bool | None

    def cells(self) -> list[str]:
        if self.value is None:
            value = "n/a"
        elif self.unit == "x":
            value = f"{self.value:.2f}x"
        elif self.unit == "%":
            value = f"{self.value:.2f} %"
        else:
            value = f"{self.value:.0f} {self.unit}"
        return [
            self.metric,
            value,
            self.target,
            "-" if self.target == "-" else verdict(self.passed),
        ]


def ratio_check(
    metric: str, a: float | None, b: float | None, limit: float, *, upper: bool
) -> Check:
    """a / b must be <= ``limit`` (``upper``) or >= ``limit``."""
    value = a / b if a and b else None
    passed = None if value is None else (value <= limit if upper else value >= limit)
    return Check(metric, value, "x", f"{'<=' if upper else '>='} {limit:g}x", passed)


def info(metric: str, value: float | None, unit: str = "x") -> Check:
    """An informative line under a target: no verdict."""
    return Check(metric, value, unit, "-", None)


def check_rows(checks: list[Check]) -> list[list[str]]:
    return [c.cells() for c in checks]


@dataclass
class Failures:
    """What went wrong in a run: failed commands and failed result checks, each logged as it
    happens and listed at the end of the report."""

    items: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.items.append(what)
        log(f"  FAILED: {what}")

    def __bool__(self) -> bool:
        return bool(self.items)

    def text_lines(self) -> list[str]:
        return ["", "failures:", *(f"  {f}" for f in self.items)] if self.items else []

    def markdown_lines(self) -> list[str]:
        if not self.items:
            return []
        return ["", "Failures: " + "; ".join(f.splitlines()[0] for f in self.items)]

    def summary(self) -> str:
        return "FAILED: " + "; ".join(f.splitlines()[0] for f in self.items)
