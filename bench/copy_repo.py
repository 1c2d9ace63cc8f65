#!/usr/bin/env python3
"""``strongroom copy`` between two local repositories against ``restic copy``.

What is measured
----------------
The ``bench/files.py`` data set (``harness/dataset.py``, ``--size`` GiB) is backed up twice
(two points of the same tree, the second tagged) into a source repository of each tool (not
timed). Then, per round, each variant copies every point of its source into a fresh, empty
target repository with another password (the target's ``init`` is not timed):

* ``strongroom copy``: the target has its own keys, so every file is streamed through the
  target's chunker and re-hashed (the general path: strongroom's ids are keyed);
* ``restic copy``: a target made by plain ``restic init``; restic copies its blobs as they
  are (its blob ids are plain SHA-256, the same in every repository: nothing is re-cut,
  each blob is decrypted, re-encrypted and packed again);
* ``restic copy (same chunker)``: a target made by ``restic init --from-repo SRC
  --copy-chunker-params``, the setup restic recommends so that later backups into the
  target deduplicate against the copied data (the copy itself does the same work).

``(incremental)`` variants copy the first point into a fresh target (not timed), then time
the copy of the rest: the second point, the same tree again, so the cost of a daily copy of
a daily backup in which nothing changed (strongroom learns the first point's copy and reads
no file again; restic finds every blob present). Their ratio is against ``restic copy
(incremental)``.

The first round's strongroom target is restored and compared with the data set
(``harness/verify.py``) and checked with ``check --read-data``; a mismatch or a failed check
is a failure. A second ``strongroom copy`` into the same target is timed too (nothing to copy:
the cost of recognising the points). Wall time, CPU time and peak RSS come from
``harness/spawn.py``'s launcher; the report gives medians over ``--runs`` rounds and the ratio
against plain ``restic copy``.

Usage::

    nice -n 10 python bench/copy_repo.py [--quick] [--size 0.5] [--runs 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import cli
from harness.dataset import ensure_dataset
from harness.peers import Restic, Space, Strongroom, available, tool_env
from harness.spawn import log, run_measured, tail
from harness.stats import Spread, run_rounds
from harness.strongroom import PASSWORD, strongroom_env, summary_json
from harness.tables import md_table, plain_table
from harness.verify import compare_trees, find_restored_root
from harness.workspace import GIB, MIB, prepare, tree_bytes, warm

TARGET_PASSWORD = "bench-target-password-not-secret"


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    target_bytes: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, seconds: float, cpu: float, rss_kib: int, size: int) -> None:
        self.seconds.append(seconds)
        self.cpu.append(cpu)
        self.rss_kib.append(rss_kib)
        self.target_bytes.append(size)


def _run(cmd: list[str], env: dict[str, str], cwd: Path, stem: Path, what: str) -> None:
    m = run_measured(cmd, env, cwd, stem)
    if m.exit_code != 0:
        raise SystemExit(f"{what} failed: {tail(stem.with_suffix('.err'))}")


def make_sources(tools: list[str], data: Path, runs: Path, logs: Path) -> dict[str, Space]:
    """Each tool's source repository with two points of `data` (not timed)."""
    spaces = {}
    for name in tools:
        space = Space(runs / f"source-{name}", data, logs)
        shutil.rmtree(space.root, ignore_errors=True)
        space.cache.mkdir(parents=True)
        tool = Strongroom() if name == "strongroom" else Restic()
        env = (
            strongroom_env(space.repo, space.cache)
            if name == "strongroom"
            else tool_env(tool, space)
        )
        _run(tool.init(space), env, space.root, logs / f"source-{name}-init", f"{name} init")
        for i, extra in enumerate(([], ["--tag", "second"])):
            log(f"source: {name} backup {i + 1}")
            cmd = [*tool.backup(space, "x"), *extra]
            _run(cmd, env, space.root, logs / f"source-{name}-backup{i}", f"{name} backup")
        spaces[name] = space
    return spaces


def _strongroom_target(target: Path, stem: Path) -> tuple[Path, dict[str, str], list[str]]:
    """A fresh, empty strongroom target with its own password (its init not timed):
    the folder, the environment copying into it from the source, the command."""
    shutil.rmtree(target, ignore_errors=True)
    (target / "cache").mkdir(parents=True)
    env = strongroom_env(target / "repo", target / "cache")
    env["STRONGROOM_PASSWORD"] = TARGET_PASSWORD
    env["STRONGROOM_FROM_PASSWORD"] = PASSWORD
    cmd = Strongroom().cmd()
    _run([*cmd, "init"], env, target, stem.with_name(stem.name + "-init"), "strongroom init")
    return target, env, cmd


def _oldest_point(cmd: list[str], env: dict[str, str], cwd: Path, stem: Path) -> str:
    """The id of the oldest point a `snapshots --json` command lists (both tools)."""
    _run(cmd, env, cwd, stem, "listing the points")
    points = json.loads(stem.with_suffix(".out").read_text())
    return str(min(points, key=lambda p: p["time"])["id"])


def strongroom_incremental(
    index: int, source: Space, runs: Path, logs: Path, results: dict[str, Result]
) -> None:
    target, env, cmd = _strongroom_target(runs / "target-strongroom-inc", logs / f"r{index}-inc")
    first = _oldest_point(
        [*cmd, "-r", str(source.repo), "snapshots", "--json"],
        {**env, "STRONGROOM_PASSWORD": PASSWORD},
        target,
        logs / f"r{index}-inc-points",
    )
    base = [*cmd, "copy", "--from-repo", str(source.repo), "--json"]
    _run([*base, first], env, target, logs / f"r{index}-inc-first", "strongroom copy")
    warm((source.repo,))
    stem = logs / f"r{index}-strongroom-copy-incremental"
    m = run_measured(base, env, target, stem)
    r = results.setdefault("strongroom copy (incremental)", Result())
    r.add(m.seconds, m.cpu_seconds, m.peak_rss_kib, tree_bytes(target / "repo"))
    done = summary_json(stem)
    variant = "strongroom copy (incremental)"
    log(f"  {variant:<28} {m.seconds:7.2f} s, read {done.get('bytes_read')} bytes")
    if m.exit_code != 0 or done.get("points_copied") != 1:
        r.failures.append(f"exit {m.exit_code}, {done.get('points_copied')} copied")


def restic_incremental(
    index: int, source: Space, runs: Path, logs: Path, results: dict[str, Result]
) -> None:
    restic = Restic()
    target = Space(runs / "target-restic-inc", source.data, logs)
    shutil.rmtree(target.root, ignore_errors=True)
    target.cache.mkdir(parents=True)
    env = tool_env(restic, target)
    env["RESTIC_PASSWORD"] = TARGET_PASSWORD
    env["RESTIC_FROM_PASSWORD"] = PASSWORD
    cmd = [*restic.cmd(), "-r", str(target.repo)]
    _run([*cmd, "init"], env, target.root, logs / f"r{index}-rinc-init", "restic init")
    first = _oldest_point(
        [*restic.cmd(), "-r", str(source.repo), "snapshots", "--json"],
        {**env, "RESTIC_PASSWORD": PASSWORD},
        target.root,
        logs / f"r{index}-rinc-points",
    )
    base = [*cmd, "copy", "--from-repo", str(source.repo)]
    _run([*base, first], env, target.root, logs / f"r{index}-rinc-first", "restic copy")
    warm((source.repo,))
    stem = logs / f"r{index}-restic-copy-incremental"
    m = run_measured(base, env, target.root, stem)
    r = results.setdefault("restic copy (incremental)", Result())
    r.add(m.seconds, m.cpu_seconds, m.peak_rss_kib, tree_bytes(target.repo))
    log(f"  {'restic copy (incremental)':<28} {m.seconds:7.2f} s")
    if m.exit_code != 0:
        r.failures.append(f"exit {m.exit_code}: {tail(stem.with_suffix('.err'), 3)}")


def strongroom_round(
    index: int, source: Space, runs: Path, logs: Path, data: Path, results: dict[str, Result]
) -> None:
    target, env, cmd = _strongroom_target(runs / "target-strongroom", logs / f"r{index}-strongroom")
    warm((source.repo,))
    for variant, suffix in (("strongroom copy", ""), ("strongroom copy (again)", "-again")):
        stem = logs / f"r{index}-strongroom-copy{suffix}"
        copy = [*cmd, "copy", "--from-repo", str(source.repo), "--json"]
        m = run_measured(copy, env, target, stem)
        r = results.setdefault(variant, Result())
        r.add(m.seconds, m.cpu_seconds, m.peak_rss_kib, tree_bytes(target / "repo"))
        done = summary_json(stem)
        log(
            f"  {variant:<28} {m.seconds:7.2f} s {m.cpu_seconds:7.2f} CPU s, "
            f"{done.get('points_copied')} copied"
        )
        if m.exit_code != 0:
            r.failures.append(f"exit {m.exit_code}: {tail(stem.with_suffix('.err'), 3)}")
        elif suffix and done.get("points_copied") != 0:
            r.failures.append(f"the second copy copied {done.get('points_copied')} points")
    if index != 1:
        return
    restore = target / "restore"
    stem = logs / "r1-strongroom-restore"
    m = run_measured([*cmd, "restore", "latest", "--target", str(restore)], env, target, stem)
    root = find_restored_root(restore, data) if m.exit_code == 0 else None
    problems = ["restore failed"] if root is None else compare_trees(data, root)[0]
    m = run_measured([*cmd, "check", "--read-data"], env, target, logs / "r1-strongroom-check")
    if m.exit_code != 0:
        problems.append("check --read-data failed")
    if problems:
        results["strongroom copy"].failures.append(f"{len(problems)} problems: {problems[0]}")
    shutil.rmtree(restore, ignore_errors=True)


def restic_round(
    index: int, source: Space, runs: Path, logs: Path, results: dict[str, Result]
) -> None:
    restic = Restic()
    for variant, same in (("restic copy", False), ("restic copy (same chunker)", True)):
        target = Space(runs / "target-restic", source.data, logs)
        shutil.rmtree(target.root, ignore_errors=True)
        target.cache.mkdir(parents=True)
        env = tool_env(restic, target)
        env["RESTIC_PASSWORD"] = TARGET_PASSWORD
        env["RESTIC_FROM_PASSWORD"] = PASSWORD
        init = [*restic.cmd(), "-r", str(target.repo), "init"]
        if same:
            init += ["--from-repo", str(source.repo), "--copy-chunker-params"]
        _run(
            init,
            env,
            target.root,
            logs / f"r{index}-{variant.replace(' ', '_')}-init",
            "restic init",
        )
        warm((source.repo,))
        stem = logs / f"r{index}-{variant.replace(' ', '_').replace('(', '').replace(')', '')}"
        copy = [*restic.cmd(), "-r", str(target.repo), "copy", "--from-repo", str(source.repo)]
        m = run_measured(copy, env, target.root, stem)
        r = results.setdefault(variant, Result())
        r.add(m.seconds, m.cpu_seconds, m.peak_rss_kib, tree_bytes(target.repo))
        log(f"  {variant:<28} {m.seconds:7.2f} s {m.cpu_seconds:7.2f} CPU s")
        if m.exit_code != 0:
            r.failures.append(f"exit {m.exit_code}: {tail(stem.with_suffix('.err'), 3)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = int(args.size * GIB)
    workdir = prepare(args.workdir, "copy", 6 * size + GIB, "data, two sources, two targets")
    peers, skipped = available([Restic()] if args.peers else [], not args.no_install)
    logs = workdir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    data = workdir / "dataset"
    info = ensure_dataset(data, size, args.seed)
    runs = workdir / "runs"
    sources = make_sources(["strongroom", *(p.name for p in peers)], data, runs, logs)
    results: dict[str, Result] = {}

    def one_round(index: int) -> None:
        strongroom_round(index, sources["strongroom"], runs, logs, data, results)
        if "restic" in sources:
            restic_round(index, sources["restic"], runs, logs, results)
        strongroom_incremental(index, sources["strongroom"], runs, logs, results)
        if "restic" in sources:
            restic_incremental(index, sources["restic"], runs, logs, results)

    run_rounds(args.runs, one_round, args.warmup)
    print(f"data set: {info.files} files, {info.bytes / GIB:.2f} GiB; two points of it copied")
    print_report(results, skipped, args.markdown)
    if not args.keep:
        shutil.rmtree(runs, ignore_errors=True)
    if args.json:
        doc = {"results": {k: asdict(r) for k, r in results.items()}, "skipped": skipped}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    failed = [f"{k}: {f}" for k, r in results.items() for f in r.failures]
    for line in failed:
        log(f"FAILED: {line}")
    return 1 if failed else 0


def print_report(results: dict[str, Result], skipped: list[str], markdown: bool) -> None:
    head = ["variant", "wall s", "CPU s", "RSS MiB", "target MiB", "restic copy / this"]
    rows = []
    for name, r in results.items():
        wall = Spread.of(r.seconds)
        incremental = name.endswith("(incremental)")
        base = results.get("restic copy (incremental)" if incremental else "restic copy")
        ratio = f"{Spread.of(base.seconds).median / wall.median:.2f}x" if base else ""
        rows.append(
            [
                name,
                wall.text(),
                Spread.of(r.cpu).text(),
                f"{max(r.rss_kib) / 1024:.0f}",
                f"{Spread.of(r.target_bytes).median / MIB:.1f}",
                ratio + (" FAILED" if r.failures else ""),
            ]
        )
    align = "lrrrrr"
    print(md_table(head, rows, align) if markdown else plain_table(head, rows, align))
    for line in skipped:
        print(f"skipped: {line}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--size", type=float, default=0.5, help="data set, GiB (default 0.5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.05 GiB, one round")
    p.add_argument("--peers", default="restic", help="'restic' (default) or '' for none")
    p.add_argument("--no-install", action="store_true", help="skip restic if it is missing")
    cli.add_common(p, runs=True)
    args = p.parse_args(argv)
    args.peers = [x for x in args.peers.split(",") if x]
    if args.quick:
        args.size = 0.05
    cli.check_runs(p, args)
    return args


if __name__ == "__main__":
    sys.exit(main())
