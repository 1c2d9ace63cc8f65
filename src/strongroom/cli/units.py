"""Sizes and durations as users type them: `64G`, `512MiB`, `5m`, `90s`.

Used as click option callbacks (`callback=parse_size`), so the option keeps a
plain string type and the message names the option on a bad value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def size_bytes(text: str) -> int:
    """Bytes, with binary suffixes (K, M, G, T; KiB/KB alike, powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 4096, 512M, 64G)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def duration_seconds(text: str) -> float:
    """Seconds, with s/m/h/d suffixes."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 5m, 1h)")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else size_bytes(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def parse_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else duration_seconds(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def parse_rate(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A bandwidth limit (`50M` = 50 MiB/s) as bytes per second; more than 0."""
    if value is None:
        return None
    try:
        rate = size_bytes(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    if rate <= 0:
        raise click.BadParameter("a rate must be more than 0")
    return rate


def jobs_option(func: F) -> F:
    """`--jobs N` (or STRONGROOM_JOBS): the workers a command's CPU work uses.

    None when not given: the service takes `strongroom.cpu.default_jobs()`."""
    option = click.option(
        "--jobs",
        type=click.IntRange(1, 64),
        default=None,
        envvar="STRONGROOM_JOBS",
        metavar="N",
        help="Workers for hashing, compression and encryption "
        "[default: the CPUs this process may use, at most 8; env STRONGROOM_JOBS].",
    )
    return option(func)
