"""The options every benchmark shares, so that they read and behave the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.dataset import DEFAULT_SEED


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of the benchmark's docstring."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])


def add_common(
    p: argparse.ArgumentParser,
    *,
    seed_help: str = "data seed",
    keep_help: str = "keep the run directory and outputs",
    runs: bool = False,
) -> None:
    """--seed, --workdir, --keep, --json, --markdown; with ``runs``: --runs and --warmup."""
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=seed_help)
    p.add_argument("--workdir", type=Path, default=None, help="scratch dir (not on tmpfs)")
    p.add_argument("--keep", action="store_true", help=keep_help)
    if runs:
        p.add_argument("--runs", type=int, default=1, help="rounds; the median is reported")
        p.add_argument(
            "--warmup", type=int, default=0, help="thrown-away rounds before them (default 0)"
        )
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")


def check_runs(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
