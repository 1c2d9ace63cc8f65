#!/usr/bin/env python3
"""File backup benchmark: strongroom against restic and borg, same data, same disk, one run.

What is measured
----------------
For every tool, on the same realistic data set (``bench/harness/dataset.py``: source trees,
thousands of small files, already-compressed files, random data, one large image file) placed
at the same path, four phases run one after the other:

1. ``first``: first backup into a freshly initialised repository (``init`` is not timed),
2. ``nochange``: a second backup with nothing changed (change detection / files cache cost),
3. ``change``: a third backup after ~1 % of the bytes changed in place (incremental cost),
4. ``restore``: a full restore of the latest snapshot into an empty directory, then verified
   against the source tree; a mismatch counts as a failure.

For each phase: wall time (``time.perf_counter`` around the subprocess), throughput in MB/s
(10^6 bytes of *source data* per second, for every phase, so phases and tools compare), peak
RSS of the tool's process (``ru_maxrss`` from ``os.wait4``: restic, borg and strongroom each run
as one process), and the repository size (sum of file sizes under the repository directory)
after the phase. With ``--runs N`` every number is the median of N runs (and the wall times'
range is shown); ``--warmup N`` runs the whole scenario N more times first, thrown away.

Why it is done this way
-----------------------
* Page cache: caches cannot be dropped reliably here, so the benchmark makes them warm
  instead: before each timed command it reads every file of the data, of the repository and of
  the tool's cache directory (this machine also pages out memory untouched for about a minute),
  so the numbers measure the tool, not the disk. Dirty pages are then flushed (``sync``) so one
  phase's or tool's write-back does not slow the next command down.
* Peak RSS: commands are started through ``bench/harness/launcher.py``, a fresh ~7 MiB
  launcher, because Linux carries a parent's memory into the child's ``ru_maxrss``; see there.
* Same path: restic and borg record absolute paths and use them to find the parent snapshot
  and their files cache, so each tool backs up ``WORKDIR/data``: a fresh copy of the cached,
  deterministic data set (``cp -a --reflink=auto``). The 1 % change is then applied in place to
  that copy, deterministically (same bytes for every tool), so that untouched files keep their
  inode, ctime and mtime as on a real disk and only touched files look changed.
* Defaults: each tool runs with its default settings (restic: repository v2, zstd "auto";
  borg: ``repokey`` encryption, lz4; strongroom: its defaults), as a user would run them.

Targets (strongroom relative to its peers) are printed as PASS/FAIL next to the ratios. A peer
that is not installed (and cannot be installed with ``apt-get``, or ``--no-install``) is skipped,
and the report says so.

Usage::

    nice -n 10 python bench/files.py [--size 2.0] [--quick] [--tools strongroom,restic,borg]
                                     [--no-install] [--runs 1] [--warmup 0] [--seed N]
                                     [--workdir DIR] [--keep] [--json FILE] [--markdown]
                                     [--compression auto|auto,N|N]
                                     [--jobs default,1,...] [--tiny [--tiny-files N]]
                                     [--no-restore]

``--compression`` sets strongroom's ``STRONGROOM_COMPRESSION`` for its repository (its
default: ``auto``, adaptive; ``1`` compresses every chunk at zstd-1, the behaviour before
adaptive compression), to compare the modes (docs/performance.md, "Adaptive compression").

``--jobs`` lists strongroom's worker settings to run side by side, each a tool of its own:
``default`` (no ``--jobs``: the CPUs it may use) is reported as ``strongroom``, a number N as
``strongroom-jN`` (``STRONGROOM_JOBS=N``); ratios against the peers are those of ``strongroom``.
CPU seconds (user + system of the tool and the children it reaped: strongroom's worker
processes, restic's threads) are shown per phase; peak RSS is the largest single process.

``--tiny`` replaces the data set by one of many tiny files (``--tiny-files``, default 48,000,
about 300 MB: 80 % under 4 KiB, 18 % 4-32 KiB, 2 % 32-256 KiB; two thirds text, one third
random; 40 files a directory), where per-file cost dominates (docs/performance.md, "File
backup on both cores"). The 1 % change is ``apply_change`` on it (its small-file part).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import cli
from harness.dataset import (
    CategoryStats,
    ChangeSummary,
    DatasetInfo,
    apply_change,
    describe_dataset,
    ensure_dataset,
)
from harness.environment import machine
from harness.peers import SUBJECT, TOOLS, Space, Strongroom, Tool, available, tool_env
from harness.spawn import log, run_measured, tail
from harness.stats import Spread, run_rounds, verdict
from harness.tables import md_table, plain_table
from harness.verify import compare_trees, find_restored_root
from harness.workspace import GIB, MIB, place_data, prepare, tree_bytes, warm

PHASES = ("first", "nochange", "change", "restore")
PHASE_LABELS = {
    "first": "first backup",
    "nochange": "no-change backup",
    "change": "1% change backup",
    "restore": "restore",
}
BACKUP_PHASES = ("first", "nochange", "change")
ALL_TOOLS = ("strongroom", "restic", "borg")
QUICK_GIB = 0.1  # --quick: a 100 MiB data set


# --------------------------------------------------------------------------- tiny files
TINY_VERSION = 1


def ensure_tiny_dataset(root: Path, files: int, seed: int) -> DatasetInfo:
    """Many tiny files under ``root/small`` (reused when the parameters match)."""
    import random

    meta_path = root.with_name(root.name + ".json")
    if meta_path.exists():
        old = DatasetInfo.from_json(json.loads(meta_path.read_text()))
        if (old.version, old.seed, old.requested_bytes) == (TINY_VERSION, seed, files):
            return old
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    noise = rng.randbytes(8 * MIB)
    letters = b"abcdefghijklmnopqrstuvwxyz_"
    words = [bytes(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(3000)]
    text = b" ".join(rng.choices(words, k=1_200_000)).replace(b"_ ", b"\n")
    total = 0
    for i in range(files):
        folder = root / "small" / f"d{i // 4000:02d}" / f"s{i // 40:04d}"
        if i % 40 == 0:
            folder.mkdir(parents=True)
        r = rng.random()
        if r < 0.80:
            size = rng.randint(0, 4096)
        elif r < 0.98:
            size = rng.randint(4096, 32 * 1024)
        else:
            size = rng.randint(32 * 1024, 256 * 1024)
        source = noise if rng.random() < 1 / 3 else text
        start = rng.randrange(0, len(source) - size)
        (folder / f"f{i:05d}.txt").write_bytes(source[start : start + size])
        total += size
    info = DatasetInfo(
        TINY_VERSION, seed, files, files, total, {"small": CategoryStats(files, total)}
    )
    meta_path.write_text(json.dumps(info.to_json()))
    return info


class StrongroomJobs(Strongroom):
    """strongroom with ``STRONGROOM_JOBS=N`` (its ``--jobs``), reported as strongroom-jN."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.name = f"{SUBJECT}-j{jobs}"

    def env(self, space: Space) -> dict[str, str]:
        return {**super().env(space), "STRONGROOM_JOBS": str(self.jobs)}


# --------------------------------------------------------------------------- one tool, one run


@dataclass
class PhaseResult:
    seconds: float
    peak_rss_kib: int
    cpu_seconds: float
    repo_bytes: int
    exit_code: int
    ok: bool
    note: str = ""


@dataclass
class ToolRun:
    tool: str
    run: int
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    restore_problems: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(p.ok for p in self.phases.values())


@dataclass
class Context:
    workdir: Path
    base: Path
    data: Path
    logs: Path
    source_bytes: int
    seed: int
    keep: bool
    restore: bool = True


def run_phase(
    tool: Tool, space: Space, ctx: Context, run: ToolRun, phase: str, cmd: list[str], cwd: Path
) -> PhaseResult:
    # Warm page cache for everything the phase reads (this machine pages out memory that was
    # not touched for about a minute), then flush dirty pages so that earlier writes do not
    # slow this command down.
    warm((space.data, space.repo, space.cache))
    stem = ctx.logs / f"run{run.run}-{tool.name}-{phase}"
    m = run_measured(cmd, tool_env(tool, space), cwd, stem)
    ok = m.exit_code in tool.ok_codes
    note = "" if m.exit_code == 0 else f"exit code {m.exit_code}"
    repo_bytes = tree_bytes(space.repo)
    result = PhaseResult(
        m.seconds, m.peak_rss_kib, m.cpu_seconds, repo_bytes, m.exit_code, ok, note
    )
    run.phases[phase] = result
    mbps = ctx.source_bytes / 1e6 / m.seconds
    log(
        f"  {tool.name:<10} {PHASE_LABELS[phase]:<17} {m.seconds:8.2f} s {mbps:8.1f} MB/s "
        f"{m.peak_rss_kib / 1024:7.1f} MiB RSS {m.cpu_seconds:7.2f} s CPU  "
        f"repo {result.repo_bytes / MIB:8.1f} MiB"
        + ("" if ok else "  FAILED")
        + (f"  ({note})" if note else "")
    )
    if m.exit_code != 0:
        log(tail(stem.with_suffix(".err")))
    return result


def run_restore(tool: Tool, space: Space, ctx: Context, run: ToolRun, label: str) -> None:
    space.restore_target.mkdir(parents=True)
    cmd, cwd = tool.restore(space, label)
    result = run_phase(tool, space, ctx, run, "restore", cmd, cwd)
    if not result.ok:
        return
    restored = find_restored_root(space.restore_target, ctx.data)
    if restored is None:
        run.restore_problems = [f"restored tree not found under {space.restore_target}"]
    else:
        run.restore_problems, mtime_diffs = compare_trees(ctx.data, restored)
        remarks = [f"{mtime_diffs} files with a different mtime"] if mtime_diffs else []
        if restored != space.restore_target / ctx.data.relative_to(ctx.data.anchor):
            remarks.append(f"restored at {restored} (not at the full original path)")
        result.note = "; ".join(remarks)
    if run.restore_problems:
        result.ok = False
        result.note = f"verification failed ({len(run.restore_problems)} problems)"
        log(f"  {tool.name}: restore verification FAILED:")
        for problem in run.restore_problems[:10]:
            log(f"    {problem}")
    else:
        log(f"  {tool.name}: restore verified (contents equal){_suffix(result.note)}")


def _suffix(note: str) -> str:
    return f"; {note}" if note else ""


def bench_tool(tool: Tool, ctx: Context, run_index: int) -> tuple[ToolRun, ChangeSummary]:
    space = Space(ctx.workdir / "runs" / tool.name, ctx.data, ctx.logs)
    if space.root.exists():
        shutil.rmtree(space.root)
    space.cache.mkdir(parents=True)
    run = ToolRun(tool.name, run_index)
    change = ChangeSummary()
    place_data(ctx.base, ctx.data)
    try:
        init_log = ctx.logs / f"run{run_index}-{tool.name}-init"
        init = run_measured(tool.init(space), tool_env(tool, space), space.root, init_log)
        if init.exit_code != 0:
            run.error = f"init failed (exit {init.exit_code})"
            log(f"  {tool.name}: {run.error}\n{tail(init_log.with_suffix('.err'))}")
            return run, change
        for phase in BACKUP_PHASES:  # the phase name is also the snapshot/archive label
            if phase == "change":
                change = apply_change(ctx.data, ctx.seed)
            cmd = tool.backup(space, phase)
            if not run_phase(tool, space, ctx, run, phase, cmd, space.root).ok:
                return run, change
        if ctx.restore:
            run_restore(tool, space, ctx, run, BACKUP_PHASES[-1])
        return run, change
    finally:
        cleanup(space, ctx)


def cleanup(space: Space, ctx: Context) -> None:
    if ctx.keep and ctx.data.exists():
        kept = space.root / "data"
        if kept.exists():
            shutil.rmtree(kept)
        ctx.data.rename(kept)
        log(f"  kept {space.root} (repo, restore, data)")
        return
    shutil.rmtree(space.root, ignore_errors=True)
    shutil.rmtree(ctx.data, ignore_errors=True)


# --------------------------------------------------------------------------- aggregation


@dataclass
class Summary:
    """Median over runs of one tool's phase."""

    seconds: float
    mb_per_s: float
    peak_rss_mib: float
    cpu_seconds: float
    repo_bytes: int
    ok: bool
    runs: int
    seconds_spread: Spread


def summarize(runs: list[ToolRun], source_bytes: int) -> dict[str, dict[str, Summary]]:
    out: dict[str, dict[str, Summary]] = {}
    for tool in dict.fromkeys(r.tool for r in runs):
        mine = [r for r in runs if r.tool == tool]
        out[tool] = {}
        for phase in PHASES:
            results = [r.phases[phase] for r in mine if phase in r.phases]
            if not results:
                continue
            spread = Spread.of(p.seconds for p in results)
            seconds = spread.median
            out[tool][phase] = Summary(
                seconds=seconds,
                mb_per_s=source_bytes / 1e6 / seconds,
                peak_rss_mib=statistics.median(p.peak_rss_kib for p in results) / 1024,
                cpu_seconds=statistics.median(p.cpu_seconds for p in results),
                repo_bytes=int(statistics.median(p.repo_bytes for p in results)),
                ok=len(results) == len(mine) and all(p.ok for p in results),
                runs=len(results),
                seconds_spread=spread,
            )
    return out


@dataclass
class Check:
    metric: str
    ratios: dict[str, float]  # peer -> strongroom/peer (speed: peer seconds / our seconds)
    target: str
    passed: bool | None  # None: no target or not computable


def _speed_ratios(
    s: dict[str, dict[str, Summary]], phase: str, peers: list[str]
) -> dict[str, float]:
    mine = s.get(SUBJECT, {}).get(phase)
    if mine is None or not mine.ok:
        return {}
    return {p: s[p][phase].seconds / mine.seconds for p in peers if _ok(s, p, phase)}


def _ok(s: dict[str, dict[str, Summary]], tool: str, phase: str) -> bool:
    summary = s.get(tool, {}).get(phase)
    return summary is not None and summary.ok


def _peak_rss(phases: dict[str, Summary]) -> float:
    return max((p.peak_rss_mib for p in phases.values()), default=0.0)


def _per_peer_check(metric: str, ratios: dict[str, float], minimum: dict[str, float]) -> Check:
    """Each present peer must reach its own minimum (missing or failed peers: n/a)."""
    wanted = {p: m for p, m in minimum.items() if p in ratios}
    target = ", ".join(f">= {m:g}x {p}" for p, m in wanted.items()) or "n/a"
    passed = all(ratios[p] >= m for p, m in wanted.items()) if wanted else None
    return Check(metric, ratios, target, passed)


def compute_checks(s: dict[str, dict[str, Summary]]) -> list[Check]:
    """strongroom/peer ratios and the targets from the issue."""
    peers = [t for t in ALL_TOOLS if t != SUBJECT and t in s]
    checks = [
        _per_peer_check(
            "first backup speed", _speed_ratios(s, "first", peers), {"restic": 3.0, "borg": 2.0}
        ),
        _per_peer_check(
            "no-change backup speed",
            _speed_ratios(s, "nochange", peers),
            {"restic": 3.0, "borg": 3.0},
        ),
        Check("1% change backup speed", _speed_ratios(s, "change", peers), "(none)", None),
    ]
    restore = _speed_ratios(s, "restore", peers)
    fastest = min((s[p]["restore"].seconds for p in restore), default=None)
    passed = None
    if fastest is not None and len(restore) == len(peers) and peers:
        passed = fastest / s[SUBJECT]["restore"].seconds >= 1.5
    checks.append(Check("restore speed", restore, ">= 1.5x faster peer", passed))

    sizes: dict[str, float] = {}
    mine = s.get(SUBJECT, {}).get("change")
    if mine is not None and mine.ok:
        sizes = {
            p: mine.repo_bytes / s[p]["change"].repo_bytes for p in peers if _ok(s, p, "change")
        }
    ok = bool(sizes) and len(sizes) == len(peers)
    checks.append(
        Check(
            "repository size (final)",
            sizes,
            "<= 1.05x smaller peer",
            min(sizes.values()) <= 1.05 if ok else None,
        )
    )
    rss: dict[str, float] = {}
    if s.get(SUBJECT) and all(_ok(s, SUBJECT, p) for p in PHASES):
        ours = _peak_rss(s[SUBJECT])
        rss = {p: ours / _peak_rss(s[p]) for p in peers if s[p] and _peak_rss(s[p]) > 0}
    ok = bool(rss) and len(rss) == len(peers)
    checks.append(
        Check(
            "peak RSS (max of phases)",
            rss,
            "< 1x both peers",
            max(rss.values()) < 1.0 if ok else None,
        )
    )
    return checks


# --------------------------------------------------------------------------- output


def phase_rows(s: dict[str, dict[str, Summary]]) -> list[list[str]]:
    rows = []
    for phase in PHASES:
        row = [PHASE_LABELS[phase]]
        for tool in s:
            summary = s[tool].get(phase)
            if summary is None:
                row += ["-", "-", "-"]
            elif not summary.ok:
                row += ["FAILED", f"{summary.seconds:.2f}s", ""]
            else:
                row += [
                    f"{summary.seconds:.2f}",
                    f"{summary.mb_per_s:.1f}",
                    f"{summary.peak_rss_mib:.1f}",
                ]
        rows.append(row)
    return rows


def repo_rows(s: dict[str, dict[str, Summary]], source_bytes: int) -> list[list[str]]:
    rows = []
    for phase in BACKUP_PHASES:
        row = [f"after {PHASE_LABELS[phase]}"]
        for tool in s:
            summary = s[tool].get(phase)
            if summary is None:
                row.append("-")
            else:
                share = 100 * summary.repo_bytes / source_bytes
                row.append(f"{summary.repo_bytes / MIB:.1f} ({share:.1f}%)")
        rows.append(row)
    return rows


def check_rows(checks: list[Check], peers: list[str]) -> list[list[str]]:
    rows = []
    for c in checks:
        ratios = [f"{c.ratios[p]:.2f}x" if p in c.ratios else "n/a" for p in peers]
        result = "-" if c.passed is None and c.target == "(none)" else verdict(c.passed)
        rows.append([c.metric, *ratios, c.target, result])
    return rows


def environment(tools: Sequence[Tool], ctx: Context) -> dict[str, object]:
    env = machine(ctx.workdir, {t.name: t.version() for t in tools}, memory=False)
    env["data_path"] = str(ctx.data)
    return env


def cpu_rows(s: dict[str, dict[str, Summary]]) -> list[list[str]]:
    """Per phase and tool: the median CPU seconds (user + system, with reaped children)."""
    rows = []
    for phase in PHASES:
        row = [PHASE_LABELS[phase]]
        for tool in s:
            summary = s[tool].get(phase)
            row.append("-" if summary is None else f"{summary.cpu_seconds:.2f}")
        rows.append(row)
    return rows


def spread_rows(s: dict[str, dict[str, Summary]]) -> list[list[str]]:
    """Per phase and tool: the median wall time and its range over the rounds."""
    rows = []
    for phase in PHASES:
        row = [PHASE_LABELS[phase]]
        for tool in s:
            summary = s[tool].get(phase)
            row.append("-" if summary is None else summary.seconds_spread.text())
        rows.append(row)
    return rows


def notes(tool_runs: list[ToolRun]) -> list[str]:
    """Failures and remarks (exit codes, verification problems, mtime differences)."""
    lines = []
    for r in tool_runs:
        if r.error:
            lines.append(f"  {r.tool} run {r.run}: {r.error}")
        for phase, p in r.phases.items():
            if p.note or not p.ok:
                status = "ok" if p.ok else "FAILED"
                lines.append(f"  {r.tool} run {r.run} {PHASE_LABELS[phase]}: {status} {p.note}")
        lines += [f"    {problem}" for problem in r.restore_problems[:5]]
    return ["", "notes:", *lines] if lines else []


def report_text(
    env: dict[str, object],
    info: DatasetInfo,
    change: ChangeSummary,
    tool_runs: list[ToolRun],
    s: dict[str, dict[str, Summary]],
    checks: list[Check],
    runs: int,
    skipped: list[str],
) -> str:
    tools = list(s)
    peers = [t for t in tools if t in ALL_TOOLS and t != SUBJECT]
    versions = env["versions"]
    assert isinstance(versions, dict)
    out = [
        f"date {env['date']}  python {env['python']}  kernel {env['kernel']}",
        f"cpu: {env['cpu_count']} x {env['cpu_model']}, load average at start "
        f"{env['load_average']}; workdir {env['workdir']} ({env['filesystem']})",
        *(f"{name}: {v}" for name, v in versions.items()),
        *describe_dataset(info),
        f"1% change: {change.bytes_written / 1e6:.1f} MB written "
        f"({100 * change.bytes_written / info.bytes:.2f}%), {change.files_modified} files "
        f"modified, {change.files_added} added, {change.files_deleted} deleted",
        "page cache: warm (data, repository and tool cache read, then sync, before each command);"
        f" median of {runs} run(s); MB/s = 10^6 bytes of source data per second;"
        " peak RSS floor ~7 MiB (launcher)",
        "",
    ]
    header = ["phase"] + ["s", "MB/s", "RSS MiB"] * len(tools)
    groups = [("", 1)] + [(t, 3) for t in tools]
    align = "l" + "r" * (len(header) - 1)
    out += [plain_table(header, phase_rows(s), align, groups), ""]
    if runs > 1:
        header = [f"wall s: median (min-max) of {runs} runs", *tools]
        out += [plain_table(header, spread_rows(s), "l" + "r" * len(tools)), ""]
    header = [f"CPU s: median of {runs} runs", *tools]
    out += [plain_table(header, cpu_rows(s), "l" + "r" * len(tools)), ""]
    header = ["repository size MiB (% of source)", *tools]
    out += [plain_table(header, repo_rows(s, info.bytes), "l" + "r" * len(tools))]
    out += notes(tool_runs)
    out += [f"skipped: {line}" for line in skipped]
    if SUBJECT in s and peers:
        out += [
            "",
            f"ratios {SUBJECT}/peer (speed: MB/s ratio, higher is better; size and RSS:"
            " lower is better)",
        ]
        header = ["metric", *(f"vs {p}" for p in peers), "target", "result"]
        out += [plain_table(header, check_rows(checks, peers), "l" + "r" * (len(header) - 1))]
    return "\n".join(out)


def report_markdown(
    env: dict[str, object],
    info: DatasetInfo,
    s: dict[str, dict[str, Summary]],
    checks: list[Check],
    runs: int,
    skipped: list[str],
) -> str:
    tools = list(s)
    peers = [t for t in tools if t in ALL_TOOLS and t != SUBJECT]
    versions = env["versions"]
    assert isinstance(versions, dict)
    out = [
        f"Measured {env['date']} on {env['cpu_count']} x {env['cpu_model']}, Python "
        f"{env['python']}, {env['filesystem']}; "
        + ", ".join(f"{v}" for v in versions.values())
        + ".",
        "",
        f"Data set: {info.files} files, {info.bytes / 1e6:.0f} MB; warm page cache; median of "
        f"{runs} run(s); MB/s = 10^6 bytes of source data per second.",
        "",
    ]
    header = ["phase"] + [f"{t} {m}" for t in tools for m in ("s", "MB/s", "RSS MiB")]
    out += [md_table(header, phase_rows(s), "l" + "r" * (len(header) - 1)), ""]
    if runs > 1:
        header = [f"wall s: median (min-max) of {runs} runs", *tools]
        out += [md_table(header, spread_rows(s), "l" + "r" * len(tools)), ""]
    header = [f"CPU s: median of {runs} runs", *tools]
    out += [md_table(header, cpu_rows(s), "l" + "r" * len(tools)), ""]
    header = ["repository size MiB (% of source)", *tools]
    out += [md_table(header, repo_rows(s, info.bytes), "l" + "r" * len(tools))]
    if SUBJECT in s and peers:
        header = ["metric", *(f"{SUBJECT}/{p}" for p in peers), "target", "result"]
        out += ["", md_table(header, check_rows(checks, peers), "l" + "r" * (len(header) - 1))]
    out += [f"Skipped: {line}." for line in skipped]
    return "\n".join(out)


def write_json(
    path: Path,
    env: dict[str, object],
    info: DatasetInfo,
    change: ChangeSummary,
    runs: list[ToolRun],
    s: dict[str, dict[str, Summary]],
    checks: list[Check],
    skipped: list[str],
) -> None:
    dataset = info.to_json()
    dataset.pop("source_manifest", None)
    doc = {
        "environment": env,
        "dataset": dataset,
        "change": asdict(change),
        "runs": [asdict(r) for r in runs],
        "median": {t: {p: asdict(v) for p, v in ph.items()} for t, ph in s.items()},
        "checks": [asdict(c) for c in checks],
        "skipped": skipped,
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--size", type=float, default=2.0, help="data set size in GiB (default 2.0)")
    p.add_argument(
        "--quick", action="store_true", help=f"sanity preset: a {QUICK_GIB * 1024:.0f} MiB data set"
    )
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated tools to run")
    p.add_argument(
        "--no-install", action="store_true", help="skip missing peers (no apt-get install)"
    )
    p.add_argument(
        "--compression",
        help="strongroom's compression setting (auto, auto,N, N; default: its own default)",
    )
    p.add_argument(
        "--jobs",
        default="default",
        help="strongroom's --jobs settings, comma-separated: default and/or numbers",
    )
    p.add_argument("--no-restore", action="store_true", help="backup phases only")
    p.add_argument("--tiny", action="store_true", help="a data set of many tiny files instead")
    p.add_argument("--tiny-files", type=int, default=48_000, help="files of --tiny (48000)")
    cli.add_common(
        p, seed_help="data set seed", keep_help="keep repositories, restores and data", runs=True
    )
    args = p.parse_args(argv)
    if args.quick:
        args.size = QUICK_GIB
    args.tools = list(dict.fromkeys(t.strip() for t in args.tools.split(",") if t.strip()))
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown or not args.tools:
        p.error(f"unknown tool(s): {', '.join(unknown)}; choose from {', '.join(ALL_TOOLS)}")
    cli.check_runs(p, args)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    if not jobs or any(j != "default" and not (j.isdigit() and int(j) >= 1) for j in jobs):
        p.error("--jobs: 'default' and/or numbers >= 1, comma-separated")
    args.jobs = list(dict.fromkeys(jobs))
    if args.size <= 0:
        p.error("--size must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compression:  # read by strongroom's init; the peers ignore it
        os.environ["STRONGROOM_COMPRESSION"] = args.compression
    size = int(args.size * GIB)
    workdir = prepare(args.workdir, "", 5 * size, "data set, working copy, repository, restore")
    wanted: list[Tool] = []
    for name in args.tools:
        if name != SUBJECT:
            wanted.append(TOOLS[name]())
            continue
        wanted += [Strongroom() if j == "default" else StrongroomJobs(int(j)) for j in args.jobs]
    tools, skipped = available(wanted, not args.no_install)

    if args.tiny:
        info = ensure_tiny_dataset(workdir / "dataset-tiny", args.tiny_files, args.seed)
    else:
        info = ensure_dataset(workdir / "dataset", size, args.seed)
    for line in describe_dataset(info):
        log(line)
    logs = workdir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    base = workdir / ("dataset-tiny" if args.tiny else "dataset")
    ctx = Context(workdir, base, workdir / "data", logs, info.bytes, args.seed, args.keep)
    ctx.restore = not args.no_restore
    env = environment(tools, ctx)
    change = ChangeSummary()

    def one_round(index: int) -> list[ToolRun]:
        nonlocal change
        results = []
        for tool in tools:
            log(f"  {tool.name}")
            result, change = bench_tool(tool, ctx, index)
            results.append(result)
        return results

    rounds = run_rounds(args.runs, one_round, args.warmup)
    runs = [r for results in rounds for r in results]
    s = summarize(runs, info.bytes)
    checks = compute_checks(s)
    if args.markdown:
        print(report_markdown(env, info, s, checks, args.runs, skipped))
    else:
        print(report_text(env, info, change, runs, s, checks, args.runs, skipped))
    if args.json:
        write_json(args.json, env, info, change, runs, s, checks, skipped)
        log(f"results written to {args.json}")
    failed = [f"{r.tool} (run {r.run})" for r in runs if not r.ok]
    if failed:
        log(f"FAILED: {', '.join(failed)}; logs in {logs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
