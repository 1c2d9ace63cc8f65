"""`backup --files-from FILE`, `--files-from-verbatim FILE`, `--files-from-raw FILE`:
the paths to back up read from files (or `-`, standard input), as restic's.

- `--files-from`: one path per line; empty lines and lines starting with `#`
  are skipped, surrounding blanks trimmed, and a line with `*`, `?` or `[`
  is a glob (each match is a path; no match: the line as it is, so that a
  missing path is reported as any other);
- `--files-from-verbatim`: one path per line, exactly as written (only the
  line end taken off): for names with leading blanks, `#` or glob characters;
- `--files-from-raw`: paths separated by NUL bytes (`find -print0`), exactly.

A decorator owning its options: the paths are added to the command's PATHS.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
MAX_LIST_BYTES = 256 << 20


def _read(source: str, what: str) -> bytes:
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_LIST_BYTES + 1)
        else:
            with open(source, "rb") as f:
                data = f.read(MAX_LIST_BYTES + 1)
    except OSError as err:
        raise click.UsageError(f"{what} {source}: {err.strerror}") from None
    if len(data) > MAX_LIST_BYTES:
        raise click.UsageError(f"{what} {source}: larger than {MAX_LIST_BYTES >> 20} MiB")
    return data


def paths_from_lists(plain: list[str], verbatim: list[str], raw: list[str]) -> list[str]:
    """The paths the three kinds of list name, in order."""
    found: list[str] = []
    for source in plain:
        for line in os.fsdecode(_read(source, "--files-from")).splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            matches = sorted(glob.glob(entry)) if any(c in entry for c in "*?[") else []
            found += matches or [entry]
    for source in verbatim:
        found += [line for line in os.fsdecode(_read(source, "--files-from-verbatim")).split("\n")]
        if found and found[-1] == "":
            found.pop()  # the last line's end
    for source in raw:
        found += [p for p in os.fsdecode(_read(source, "--files-from-raw")).split("\0") if p]
    if any(not p for p in found):
        raise click.UsageError("a list of paths holds an empty line (use --files-from to skip it)")
    return found


def files_from_options(func: F) -> F:
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        lists = (
            list(kwargs.pop("files_from")),
            list(kwargs.pop("files_from_verbatim")),
            list(kwargs.pop("files_from_raw")),
        )
        if any(lists):
            if sum(source == "-" for kind in lists for source in kind) > 1:
                raise click.UsageError("standard input (-) can be read by one list only")
            listed = paths_from_lists(*lists)
            if not listed and not kwargs["paths"]:
                raise click.UsageError("the lists of paths are empty: nothing to back up")
            kwargs["paths"] = (*kwargs["paths"], *listed)
        return func(*args, **kwargs)

    for name, text in (
        ("--files-from-raw", "paths separated by NUL bytes (find -print0)"),
        ("--files-from-verbatim", "one path per line, exactly as written"),
        ("--files-from", "one path per line; # comments, blank lines skipped; globs expanded"),
    ):
        run = click.option(
            name,
            multiple=True,
            metavar="FILE",
            help=f"Back up the paths in FILE (- for stdin): {text}.",
        )(run)
    return run  # type: ignore[return-value]
