"""The progress bars' rate is in the same binary units as their sizes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from strongroom.cli.rate_column import BinaryRateColumn


def _task(speed: float | None) -> Any:
    return SimpleNamespace(finished_speed=None, speed=speed)


def test_rate_is_in_mib_per_second() -> None:
    column = BinaryRateColumn()
    assert column.render(_task(3 * 1024 * 1024 + 512 * 1024)).plain == "3.50 MiB/s"
    assert column.render(_task(None)).plain == "?"
