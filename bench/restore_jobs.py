#!/usr/bin/env python3
"""Restore and ``check --read-data`` with ``--jobs``: strongroom against restic and borg.

What is measured
----------------
Two data sets, each backed up once by every tool (not timed): the ``bench/files.py`` data set
(``harness/dataset.py``, ``--size`` GiB) and a tree of tiny files (``--tiny`` files, three
quarters of them under 4 KiB, the rest up to 256 KiB, a tenth random, in folders of 40).
Then, per round, every variant restores the latest point into an empty folder:

* ``restic``, ``borg``: their ``restore`` / ``extract`` with default settings;
* ``strongroom`` at ``--jobs 1`` (everything on the calling thread), ``--jobs 2`` and
  ``--jobs 4``; with ``--before SRC`` also the strongroom at ``SRC`` (``PYTHONPATH``; e.g.
  the checkout before these changes) with its defaults;

and strongroom's ``check --read-data`` runs at the same job counts (and ``--before``).
The first round's restores are compared with the source (``harness/verify.py``: names,
types, sizes, modes, contents); a mismatch is a failure. Wall time, CPU time (user + system
of the command and its children) and peak RSS come from ``harness/spawn.py``'s launcher;
the report gives medians and ranges over ``--runs`` rounds, ratios against the faster peer,
and the load average before each round (the machine is shared: read ratios, not seconds).

Usage::

    nice -n 10 python bench/restore_jobs.py [--quick] [--size 2.0] [--tiny 30000] [--runs 3]
        [--jobs 1,2,4] [--before OLD/src] [--peers restic,borg] [--skip-files] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import cli
from harness.dataset import ensure_dataset
from harness.peers import TOOLS as PEER_TOOLS
from harness.peers import Space, Tool, available, tool_env
from harness.spawn import log, run_measured, tail
from harness.stats import Spread, run_rounds
from harness.strongroom import strongroom_cmd, strongroom_env
from harness.tables import md_table, plain_table
from harness.verify import compare_trees, find_restored_root
from harness.workspace import GIB, prepare, warm

LABEL = "first"  # the one backup's label (borg's archive name)


def make_tiny_tree(root: Path, count: int, seed: int) -> None:
    """`count` files in folders of 40: 75 % of 0-4 KiB, 22 % of 4-64 KiB, 3 % of 64-256 KiB;
    text from a small vocabulary, a tenth random (deterministic from `seed`)."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{count} {seed}":
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) + b" "
        for _ in range(2000)
    ]
    for i in range(count):
        folder = root / f"d{i // 400:03d}" / f"s{(i // 40) % 10}"
        if i % 40 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        r = rng.random()
        if r < 0.75:
            size = rng.randint(0, 4096)
        elif r < 0.97:
            size = rng.randint(4096, 64 << 10)
        else:
            size = rng.randint(64 << 10, 256 << 10)
        if rng.random() < 0.1:
            data = rng.randbytes(size)
        else:
            out = bytearray()
            while len(out) < size:
                out += rng.choice(words)
            data = bytes(out[:size])
        (folder / f"f{i}.txt").write_bytes(data)
    marker.write_text(f"{count} {seed}")


@dataclass
class Variant:
    """One way of restoring (a peer, or strongroom with some jobs and code)."""

    name: str
    tool: Tool
    jobs: int | None = None  # strongroom: --jobs
    src: str | None = None  # strongroom: PYTHONPATH (the code measured)

    def env(self, space: Space) -> dict[str, str]:
        if self.tool.name != "strongroom":
            return tool_env(self.tool, space)
        env = strongroom_env(space.repo, space.cache)
        env.pop("STRONGROOM_JOBS", None)
        if self.src:
            env["PYTHONPATH"] = self.src
        return env

    def restore_cmd(self, space: Space) -> tuple[list[str], Path]:
        if self.tool.name != "strongroom":
            return self.tool.restore(space, LABEL)
        cmd = [*strongroom_cmd(), "restore", "latest", "--target", str(space.restore_target)]
        return cmd + ([f"--jobs={self.jobs}"] if self.jobs else []), space.root

    def check_cmd(self) -> list[str]:
        return [*strongroom_cmd(), "check", "--read-data"] + (
            [f"--jobs={self.jobs}"] if self.jobs else []
        )


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def backup_once(tool: Tool, space: Space, logs: Path, name: str) -> None:
    """Init and one backup of `space.data` (not timed)."""
    if space.root.exists():
        shutil.rmtree(space.root)
    space.cache.mkdir(parents=True)
    env = (
        strongroom_env(space.repo, space.cache)
        if tool.name == "strongroom"
        else tool_env(tool, space)
    )
    for step, cmd in (("init", tool.init(space)), ("backup", tool.backup(space, LABEL))):
        m = run_measured(cmd, env, space.root, logs / f"{name}-{tool.name}-{step}")
        if m.exit_code not in tool.ok_codes:
            raise SystemExit(
                f"{tool.name} {step} failed: {tail(logs / f'{name}-{tool.name}-{step}.err')}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = int(args.size * GIB)
    workdir = prepare(args.workdir, "restorejobs", 6 * size + GIB, "data, repositories, restores")
    peers, skipped = available([PEER_TOOLS[p]() for p in args.peers], not args.no_install)
    subject = PEER_TOOLS["strongroom"]()
    variants = [Variant(p.name, p) for p in peers]
    if args.before:
        variants.append(Variant("strongroom before", subject, None, args.before))
    variants += [Variant(f"strongroom --jobs {j}", subject, j) for j in args.jobs]
    logs = workdir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    tiny = workdir / "tiny"
    make_tiny_tree(tiny, args.tiny, args.seed)
    sets = [(f"tiny files ({args.tiny} files)", tiny)]
    if not args.skip_files:
        info = ensure_dataset(workdir / "dataset", size, args.seed)
        sets.append(
            (
                f"files.py data set ({info.files} files, {info.bytes / GIB:.2f} GiB)",
                workdir / "dataset",
            )
        )
    results: dict[tuple[str, str, str], Result] = {}
    loads: list[str] = []
    for label, data in sets:
        key = label.split(" (")[0].replace(".", "_")
        spaces = {}
        for tool in [*peers, subject]:
            space = Space(workdir / "runs" / key.replace(" ", "-") / tool.name, data, logs)
            log(f"{key}: {tool.name} backup")
            backup_once(tool, space, logs, key.replace(" ", "-"))
            spaces[tool.name] = space

        def one_round(
            index: int, key: str = key, data: Path = data, spaces: dict[str, Space] = spaces
        ) -> None:
            loads.append(f"{key} round {index}: load average {os.getloadavg()[0]:.1f}")
            log(loads[-1])
            for v in variants:
                space = spaces[v.tool.name]
                shutil.rmtree(space.restore_target, ignore_errors=True)
                space.restore_target.mkdir(parents=True)
                warm((space.repo,))
                cmd, cwd = v.restore_cmd(space)
                stem = logs / f"{key.replace(' ', '-')}-r{index}-{v.name.replace(' ', '_')}"
                m = run_measured(cmd, v.env(space), cwd, stem)
                r = results.setdefault((key, "restore", v.name), Result())
                r.seconds.append(m.seconds)
                r.cpu.append(m.cpu_seconds)
                r.rss_kib.append(m.peak_rss_kib)
                log(f"  restore {v.name:<22} {m.seconds:7.2f} s {m.cpu_seconds:7.2f} CPU s")
                if m.exit_code not in v.tool.ok_codes:
                    r.failures.append(f"exit {m.exit_code}: {tail(stem.with_suffix('.err'), 3)}")
                elif index == 1:
                    root = find_restored_root(space.restore_target, data)
                    problems = (
                        ["restored tree not found"]
                        if root is None
                        else compare_trees(data, root)[0]
                    )
                    if problems:
                        r.failures.append(f"{len(problems)} differences, first: {problems[0]}")
                shutil.rmtree(space.restore_target, ignore_errors=True)
                if v.tool.name != "strongroom":
                    continue
                warm((space.repo,))
                stem = stem.with_name(stem.name + "-check")
                m = run_measured(v.check_cmd(), v.env(space), space.root, stem)
                r = results.setdefault((key, "check --read-data", v.name), Result())
                r.seconds.append(m.seconds)
                r.cpu.append(m.cpu_seconds)
                r.rss_kib.append(m.peak_rss_kib)
                log(f"  check   {v.name:<22} {m.seconds:7.2f} s {m.cpu_seconds:7.2f} CPU s")
                if m.exit_code != 0:
                    r.failures.append(f"exit {m.exit_code}")

        run_rounds(args.runs, one_round, args.warmup)
        print_report(results, variants, [p.name for p in peers], loads, [], args.markdown)
        sys.stdout.flush()
    print_report(results, variants, [p.name for p in peers], loads, skipped, args.markdown)
    if not args.keep:
        shutil.rmtree(workdir / "runs", ignore_errors=True)
    if args.json:
        doc = {" / ".join(k): asdict(r) for k, r in results.items()}
        args.json.write_text(json.dumps({"results": doc, "loads": loads}, indent=1) + "\n")
    failed = [f"{k}: {f}" for k, r in results.items() for f in r.failures]
    for line in failed:
        log(f"FAILED: {line}")
    return 1 if failed else 0


def print_report(
    results: dict[tuple[str, str, str], Result],
    variants: list[Variant],
    peers: list[str],
    loads: list[str],
    skipped: list[str],
    markdown: bool,
) -> None:
    head = ["data set", "phase", "variant", "wall s", "CPU s", "RSS MiB", "vs faster peer"]
    rows = []
    for (key, phase, name), r in results.items():
        wall = Spread.of(r.seconds)
        peer_walls = [
            Spread.of(results[(key, phase, p)].seconds).median
            for p in peers
            if (key, phase, p) in results
        ]
        ratio = f"{min(peer_walls) / wall.median:.2f}x" if peer_walls and name not in peers else ""
        rows.append(
            [
                key,
                phase,
                name,
                wall.text(),
                Spread.of(r.cpu).text(),
                f"{max(r.rss_kib) / 1024:.0f}",
                ratio + (" FAILED" if r.failures else ""),
            ]
        )
    align = "lllrrrr"
    print(md_table(head, rows, align) if markdown else plain_table(head, rows, align))
    for line in loads + [f"skipped: {s}" for s in skipped]:
        print(line)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--size", type=float, default=2.0, help="files.py data set, GiB (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.1 GiB, 2,000 tiny files")
    p.add_argument("--tiny", type=int, default=30000, help="files in the tiny-files tree")
    p.add_argument("--peers", default="restic,borg", help="comma-separated peers ('' for none)")
    p.add_argument("--before", default=None, metavar="SRC", help="also strongroom from SRC")
    p.add_argument("--skip-files", action="store_true", help="only the tiny-files tree")
    p.add_argument("--jobs", default="1,2,4", help="strongroom's --jobs values (default 1,2,4)")
    p.add_argument("--no-install", action="store_true", help="skip missing peers")
    cli.add_common(p, runs=True)
    args = p.parse_args(argv)
    args.peers = [x for x in args.peers.split(",") if x]
    args.jobs = [int(x) for x in args.jobs.split(",") if x]
    if args.quick:
        args.size, args.tiny = 0.1, 2000
    cli.check_runs(p, args)
    return args


if __name__ == "__main__":
    sys.exit(main())
