#!/usr/bin/env python3
"""The local cache of a remote repository (issue #17), against a Ceph RADOS Gateway.

Set-up (not timed): a gateway (``.ci/ceph-rgw-up.sh``), an S3 repository, a tree of
``--dirs`` folders of ``--files`` small files each, and ``--points`` backups of it (a
file changed between them, so every point has its own root tree).

Timed, ``--runs`` rounds, each with and without the cache alternated (``--no-cache``; the
cache is filled once before the rounds, as it is after a first use):

- ``snapshots``: lists every point (reads every point object);
- ``ls latest``: walks the newest point's trees;
- a no-change incremental backup (reads the parent's trees and the index).

Prints medians and ranges, and the ratio without/with the cache.

    python bench/remote_cache.py [--quick] [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness import cli
from harness.services import Gateway
from harness.stats import Spread
from harness.strongroom import strongroom_cmd, strongroom_env


def _run(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([*strongroom_cmd(), *args], env=env, capture_output=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"strongroom {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return took


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--dirs", type=int, default=200, help="folders in the tree (default 200)")
    p.add_argument("--files", type=int, default=25, help="files per folder (default 25)")
    p.add_argument("--points", type=int, default=20, help="points made first (default 20)")
    p.add_argument("--quick", action="store_true", help="small data, one round")
    cli.add_common(p, runs=True)
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.dirs, args.files, args.points = 1, 20, 10, 3
    cli.check_runs(p, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path("/work/bench-scratch")
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="remote-cache-", dir=workdir) as tmp:
        work = Path(tmp)
        gateway = Gateway(work / "rgw")
        try:
            times, phases = _measure(args, work, gateway)
        finally:
            gateway.close()  # its daemons: never left running
    _print(args, times, phases)
    return 0


def _measure(
    args: argparse.Namespace, work: Path, gateway: Gateway
) -> tuple[dict[tuple[str, bool], list[float]], dict[str, list[str]]]:
    env = strongroom_env(Path("unused"), work)
    env.update(gateway.env)
    env["STRONGROOM_REPO"] = f"s3:{gateway.endpoint}/cachebench/repo"
    src = work / "src"
    for d in range(args.dirs):
        folder = src / f"d{d:04d}"
        folder.mkdir(parents=True)
        for f in range(args.files):
            (folder / f"f{f:03d}.txt").write_text(f"file {d}/{f}\n" * (1 + f % 7))
    _run(env, "init")
    for p in range(args.points):
        (src / "changing.txt").write_text(f"version {p}\n")
        _run(env, "--no-cache", "backup", str(src))
    for warm in (["snapshots"], ["ls", "latest"], ["backup", str(src)]):
        _run(env, *warm)  # fills the cache, as any earlier command would
    phases = {
        "snapshots": ["snapshots"],
        "ls latest": ["ls", "latest"],
        "no-change backup": ["backup", str(src)],
    }
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.runs):
        for name, command in phases.items():
            for cached in (True, False):
                flags = [] if cached else ["--no-cache"]
                times.setdefault((name, cached), []).append(_run(env, *flags, *command))
    return times, phases


def _print(
    args: argparse.Namespace,
    times: dict[tuple[str, bool], list[float]],
    phases: dict[str, list[str]],
) -> None:
    print(
        f"\n{args.dirs * args.files + 1} files in {args.dirs} folders, {args.points} points "
        f"(+{args.runs * 2} no-change), S3 on a local RADOS Gateway; {args.runs} rounds\n"
    )
    print("| command | with cache s | without s | without / with |")
    print("| :--- | ---: | ---: | ---: |")
    results = {}
    for name in phases:
        with_cache = Spread.of(times[(name, True)])
        without = Spread.of(times[(name, False)])
        ratio = without.median / with_cache.median
        results[name] = {"with_cache": times[(name, True)], "without": times[(name, False)]}
        print(f"| {name} | {with_cache.text()} | {without.text()} | {ratio:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
