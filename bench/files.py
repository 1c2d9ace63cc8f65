#!/usr/bin/env python3
"""File backup benchmark: strongroom against restic and borg, same data, same disk, one run.

What is measured
----------------
For every tool, on the same realistic data set (``bench/dataset.py``: source trees, thousands
of small files, already-compressed files, random data, one large image file) placed at the same
path, four phases run one after the other:

1. ``first``: first backup into a freshly initialised repository (``init`` is not timed),
2. ``nochange``: a second backup with nothing changed (change detection / files cache cost),
3. ``change``: a third backup after ~1 % of the bytes changed in place (incremental cost),
4. ``restore``: a full restore of the latest snapshot into an empty directory, then verified
   against the source tree; a mismatch counts as a failure.

For each phase: wall time (``time.perf_counter`` around the subprocess), throughput in MB/s
(10^6 bytes of *source data* per second, for every phase, so phases and tools compare), peak
RSS of the tool's process (``ru_maxrss`` from ``os.wait4``: restic, borg and strongroom each run
as one process), and the repository size (sum of file sizes under the repository directory)
after the phase. With ``--runs N`` every number is the median of N runs.

Why it is done this way
-----------------------
* Page cache: caches cannot be dropped reliably here, so the benchmark makes them warm
  instead: before each timed command it reads every file of the data, of the repository and of
  the tool's cache directory (this machine also pages out memory untouched for about a minute),
  so the numbers measure the tool, not the disk. Dirty pages are then flushed (``sync``) so one
  phase's or tool's write-back does not slow the next command down.
* Peak RSS: commands are started through ``bench/spawn.py``, a fresh ~7 MiB launcher, because
  Linux carries a parent's memory into the child's ``ru_maxrss``; see that file.
* Same path: restic and borg record absolute paths and use them to find the parent snapshot
  and their files cache, so each tool backs up ``WORKDIR/data``: a fresh copy of the cached,
  deterministic data set (``cp -a --reflink=auto``). The 1 % change is then applied in place to
  that copy, deterministically (same bytes for every tool), so that untouched files keep their
  inode, ctime and mtime as on a real disk and only touched files look changed.
* Defaults: each tool runs with its default settings (restic: repository v2, zstd "auto";
  borg: ``repokey`` encryption, lz4; strongroom: its defaults), as a user would run them.

Targets (strongroom relative to its peers) are printed as PASS/FAIL next to the ratios.

Usage::

    nice -n 10 python bench/files.py [--size 2.0] [--tools strongroom,restic,borg] [--runs 1]
                                     [--workdir DIR] [--keep] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dataset import (
    DEFAULT_SEED,
    GIB,
    MIB,
    ChangeSummary,
    DatasetInfo,
    apply_change,
    ensure_dataset,
    iter_files,
)

PHASES = ("first", "nochange", "change", "restore")
PHASE_LABELS = {
    "first": "first backup",
    "nochange": "no-change backup",
    "change": "1% change backup",
    "restore": "restore",
}
BACKUP_PHASES = ("first", "nochange", "change")
ALL_TOOLS = ("strongroom", "restic", "borg")
SUBJECT = "strongroom"
PASSWORD = "bench-password-not-secret"


def log(msg: str) -> None:
    """Progress goes to stderr; results go to stdout."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tools


@dataclass
class Space:
    """Per-tool scratch directories; ``data`` is the backed-up path, the same for all tools."""

    root: Path
    data: Path
    logs: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def restore_target(self) -> Path:
        return self.root / "restore"


class Tool:
    """How to drive one backup tool. Subclasses fill in the commands."""

    name = ""
    ok_codes: frozenset[int] = frozenset({0})

    def command(self) -> list[str] | None:
        """The command prefix, or None if the tool is not installed."""
        exe = shutil.which(self.name)
        return [exe] if exe else None

    def version_args(self) -> list[str]:
        return ["--version"]

    def env(self, space: Space) -> dict[str, str]:
        return {}

    def init(self, space: Space) -> list[str]:
        raise NotImplementedError

    def backup(self, space: Space, label: str) -> list[str]:
        raise NotImplementedError

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        """(command, working directory) restoring snapshot ``label`` (the latest)."""
        raise NotImplementedError

    def cmd(self) -> list[str]:
        prefix = self.command()
        if prefix is None:
            raise RuntimeError(f"{self.name} is not installed")
        return prefix


class Restic(Tool):
    name = "restic"

    def version_args(self) -> list[str]:
        return ["version"]

    def env(self, space: Space) -> dict[str, str]:
        return {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(space.cache)}

    def init(self, space: Space) -> list[str]:
        return [*self.cmd(), "-r", str(space.repo), "init"]

    def backup(self, space: Space, label: str) -> list[str]:
        return [*self.cmd(), "-r", str(space.repo), "backup", str(space.data)]

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        target = str(space.restore_target)
        cmd = [*self.cmd(), "-r", str(space.repo), "restore", "latest", "--target", target]
        return cmd, space.root


class Borg(Tool):
    name = "borg"
    ok_codes = frozenset({0, 1})  # 1 = warnings (e.g. a file changed while read)

    def env(self, space: Space) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(space.cache),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self, space: Space) -> list[str]:
        return [*self.cmd(), "init", "-e", "repokey", str(space.repo)]

    def backup(self, space: Space, label: str) -> list[str]:
        return [*self.cmd(), "create", f"{space.repo}::{label}", str(space.data)]

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        return [*self.cmd(), "extract", f"{space.repo}::{label}"], space.restore_target


class Strongroom(Tool):
    name = "strongroom"

    def command(self) -> list[str] | None:
        exe = shutil.which("strongroom")
        if exe:
            return [exe]
        probe = subprocess.run(
            [sys.executable, "-c", "import strongroom"], capture_output=True, check=False
        )
        return [sys.executable, "-m", "strongroom"] if probe.returncode == 0 else None

    def env(self, space: Space) -> dict[str, str]:
        return {"STRONGROOM_REPO": str(space.repo), "STRONGROOM_PASSWORD": PASSWORD}

    def init(self, space: Space) -> list[str]:
        return [*self.cmd(), "init"]

    def backup(self, space: Space, label: str) -> list[str]:
        return [*self.cmd(), "backup", str(space.data)]

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        cmd = [*self.cmd(), "restore", "latest", "--target", str(space.restore_target)]
        return cmd, space.root


TOOLS: dict[str, type[Tool]] = {"strongroom": Strongroom, "restic": Restic, "borg": Borg}
APT_PACKAGES = {"restic": "restic", "borg": "borgbackup"}


def tool_env(tool: Tool, space: Space) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(space.cache / "xdg-cache")
    env["XDG_CONFIG_HOME"] = str(space.cache / "xdg-config")
    env.update(tool.env(space))
    return env


def ensure_installed(tools: Sequence[Tool]) -> None:
    """Install restic/borg from Debian's packages if missing; strongroom must be installed."""
    missing = [t.name for t in tools if t.command() is None]
    packages = [APT_PACKAGES[name] for name in missing if name in APT_PACKAGES]
    if packages:
        log(f"installing {' '.join(packages)} with apt-get ...")
        cmd = ["apt-get", "install", "-y", *packages]
        if subprocess.run(cmd, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], check=True)
            subprocess.run(cmd, check=True)
    still = [t.name for t in tools if t.command() is None]
    if still:
        hint = " (pip install -e . in the repository)" if SUBJECT in still else ""
        raise SystemExit(f"not installed: {', '.join(still)}{hint}")


def tool_version(tool: Tool) -> str:
    try:
        proc = subprocess.run(
            [*tool.cmd(), *tool.version_args()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    first = lines[0] if lines else ""
    return first if proc.returncode == 0 else f"unknown (exit {proc.returncode}: {first})"


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    seconds: float
    peak_rss_kib: int
    cpu_seconds: float
    exit_code: int


SPAWN = Path(__file__).with_name("spawn.py")


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path, log_stem: Path) -> Measurement:
    """Run ``cmd`` through ``spawn.py``: wall time (perf_counter) and peak RSS (os.wait4).

    The launcher is a fresh, small process so that the measured peak RSS is the tool's own and
    not inherited from this (large) process; see spawn.py.
    """
    log_stem.parent.mkdir(parents=True, exist_ok=True)
    err_path = log_stem.with_suffix(".err")
    err_path.write_text(f"$ {' '.join(cmd)}\n")
    spec = {
        "cmd": cmd,
        "env": env,
        "cwd": str(cwd),
        "stdout": str(log_stem.with_suffix(".out")),
        "stderr": str(err_path),
    }
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(SPAWN)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout)
    return Measurement(
        result["seconds"], result["maxrss_kib"], result["cpu_seconds"], result["exit_code"]
    )


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def tree_bytes(root: Path) -> int:
    """Sum of the sizes of the regular files under ``root`` (repository size)."""
    return sum(st.st_size for _, st in iter_files(root)) if root.is_dir() else 0


def warm_page_cache(root: Path) -> int:
    """Read every file under ``root`` once so that every tool starts with a warm page cache."""
    total = 0
    if not root.is_dir():
        return 0
    buf = bytearray(MIB)
    for rel, _ in iter_files(root):
        with (root / rel).open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


# --------------------------------------------------------------------------- verification


def tree_entries(root: Path) -> dict[str, tuple[str, object]]:
    """rel path -> (kind, detail): files with their size, symlinks with their target."""
    entries: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                entries[rel] = ("symlink", os.readlink(path))
            elif os.path.isdir(path):
                entries[rel] = ("dir", None)
            else:
                entries[rel] = ("file", st.st_size)
    return entries


def same_content(a: Path, b: Path, block: int = MIB) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(block), fb.read(block)
            if ca != cb:
                return False
            if not ca:
                return True


def compare_trees(expected: Path, actual: Path) -> tuple[list[str], int]:
    """(problems, files whose mtime differs): problems make the restore a failure."""
    want, got = tree_entries(expected), tree_entries(actual)
    problems = [f"missing: {rel}" for rel in sorted(want.keys() - got.keys())]
    problems += [f"unexpected: {rel}" for rel in sorted(got.keys() - want.keys())]
    mtime_diffs = 0
    for rel in sorted(want.keys() & got.keys()):
        if want[rel] != got[rel]:
            problems.append(f"differs: {rel}: {want[rel]} != {got[rel]}")
        elif want[rel][0] == "file":
            if not same_content(expected / rel, actual / rel):
                problems.append(f"content differs: {rel}")
            elif os.lstat(expected / rel).st_mtime_ns != os.lstat(actual / rel).st_mtime_ns:
                mtime_diffs += 1
    return problems, mtime_diffs


def find_restored_root(target: Path, data: Path) -> Path | None:
    """Where the tool put ``data`` under ``target`` (restic and borg recreate the full path)."""
    candidate = target / data.relative_to(data.anchor)
    if candidate.is_dir():
        return candidate
    wanted = set(os.listdir(data))
    queue = [target]
    while queue:
        here = queue.pop(0)
        try:
            names = set(os.listdir(here))
        except OSError:
            continue
        if names == wanted:
            return here
        if len(here.relative_to(target).parts) < len(data.parts) + 2:
            queue += sorted(here / n for n in names if (here / n).is_dir())
    return None


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


def place_data(base: Path, data: Path) -> None:
    """Fresh copy of the cached data set at the benchmarked path."""
    if data.exists():
        shutil.rmtree(data)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(data)], check=True)
    # Let the copy's ctimes age: files caches treat too-recent timestamps as racy.
    time.sleep(1.5)


def run_phase(
    tool: Tool, space: Space, ctx: Context, run: ToolRun, phase: str, cmd: list[str], cwd: Path
) -> PhaseResult:
    # Warm page cache for everything the phase reads (this machine pages out memory that was
    # not touched for about a minute), then flush dirty pages so that earlier writes do not
    # slow this command down.
    for tree in (space.data, space.repo, space.cache):
        warm_page_cache(tree)
    os.sync()
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


def summarize(runs: list[ToolRun], source_bytes: int) -> dict[str, dict[str, Summary]]:
    out: dict[str, dict[str, Summary]] = {}
    for tool in dict.fromkeys(r.tool for r in runs):
        mine = [r for r in runs if r.tool == tool]
        out[tool] = {}
        for phase in PHASES:
            results = [r.phases[phase] for r in mine if phase in r.phases]
            if not results:
                continue
            seconds = statistics.median(p.seconds for p in results)
            out[tool][phase] = Summary(
                seconds=seconds,
                mb_per_s=source_bytes / 1e6 / seconds,
                peak_rss_mib=statistics.median(p.peak_rss_kib for p in results) / 1024,
                cpu_seconds=statistics.median(p.cpu_seconds for p in results),
                repo_bytes=int(statistics.median(p.repo_bytes for p in results)),
                ok=len(results) == len(mine) and all(p.ok for p in results),
                runs=len(results),
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


def text_table(
    headers: list[list[str]], rows: list[list[str]], groups: list[tuple[str, int]] | None = None
) -> str:
    """Plain aligned table; first column left-aligned; ``groups`` (title, span) head columns."""
    all_rows = headers + rows
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(all_rows[0]))]

    def fmt(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    lines = []
    if groups:
        spans, col = [], 0
        for title, span in groups:
            width = sum(widths[col : col + span]) + 2 * (span - 1)
            spans.append(title.center(width, "-") if title else " " * width)
            col += span
        lines.append("  ".join(spans).rstrip())
    lines += [fmt(h) for h in headers]
    lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + [fmt(r) for r in rows])


def markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """GitHub markdown table; the first ``left`` columns are left-aligned, the rest right."""
    align = [":---"] * left + ["---:"] * (len(header) - left)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


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
        result = "-" if c.passed is None and c.target == "(none)" else _verdict(c.passed)
        rows.append([c.metric, *ratios, c.target, result])
    return rows


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo says (empty if it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def environment(tools: Sequence[Tool], ctx: Context) -> dict[str, object]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {t.name: tool_version(t) for t in tools},
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "filesystem": filesystem_type(ctx.workdir),
        "workdir": str(ctx.workdir),
        "data_path": str(ctx.data),
    }


def describe_dataset(info: DatasetInfo) -> list[str]:
    lines = [
        f"data set: {info.files} files, {info.bytes / 1e6:.1f} MB ({info.bytes / GIB:.2f} GiB)"
    ]
    for name, c in info.categories.items():
        lines.append(f"  {name:<11} {c.files:>7} files {c.bytes / 1e6:10.1f} MB")
    return lines


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
) -> str:
    tools = list(s)
    peers = [t for t in tools if t != SUBJECT]
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
    out += [text_table([header], phase_rows(s), groups), ""]
    out += [text_table([["repository size MiB (% of source)", *tools]], repo_rows(s, info.bytes))]
    out += notes(tool_runs)
    if SUBJECT in s and peers:
        out += [
            "",
            f"ratios {SUBJECT}/peer (speed: MB/s ratio, higher is better; size and RSS:"
            " lower is better)",
        ]
        out += [
            text_table(
                [["metric", *(f"vs {p}" for p in peers), "target", "result"]],
                check_rows(checks, peers),
            )
        ]
    return "\n".join(out)


def report_markdown(
    env: dict[str, object],
    info: DatasetInfo,
    s: dict[str, dict[str, Summary]],
    checks: list[Check],
    runs: int,
) -> str:
    tools = list(s)
    peers = [t for t in tools if t != SUBJECT]
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
    out += [markdown_table(header, phase_rows(s)), ""]
    out += [markdown_table(["repository size MiB (% of source)", *tools], repo_rows(s, info.bytes))]
    if SUBJECT in s and peers:
        header = ["metric", *(f"{SUBJECT}/{p}" for p in peers), "target", "result"]
        out += ["", markdown_table(header, check_rows(checks, peers))]
    return "\n".join(out)


def write_json(
    path: Path,
    env: dict[str, object],
    info: DatasetInfo,
    change: ChangeSummary,
    runs: list[ToolRun],
    s: dict[str, dict[str, Summary]],
    checks: list[Check],
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
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- main


def filesystem_type(path: Path) -> str:
    """Type of the file system holding ``path`` (longest mount point prefix)."""
    best, fstype = "", "unknown"
    real = os.path.realpath(path)
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, fields[2]
    return fstype


def default_workdir() -> Path:
    if os.access("/work", os.W_OK):
        return Path("/work/bench-scratch")
    return Path(os.environ.get("TMPDIR") or "/var/tmp") / "strongroom-bench"


def check_workdir(workdir: Path, size: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    fstype = filesystem_type(workdir)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{workdir} is on {fstype}: use --workdir on a real disk")
    free = shutil.disk_usage(workdir).free
    if free < 5 * size:
        log(
            f"warning: only {free / GIB:.1f} GiB free in {workdir}; about {5 * size / GIB:.1f} "
            "GiB are needed (data set, working copy, repository, restore)"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=2.0, help="data set size in GiB (default 2.0)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch dir (not on tmpfs)")
    p.add_argument("--keep", action="store_true", help="keep repositories, restores and data")
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated tools to run")
    p.add_argument("--runs", type=int, default=1, help="runs per tool; the median is reported")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data set seed")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = p.parse_args(argv)
    args.tools = list(dict.fromkeys(t.strip() for t in args.tools.split(",") if t.strip()))
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown or not args.tools:
        p.error(f"unknown tool(s): {', '.join(unknown)}; choose from {', '.join(ALL_TOOLS)}")
    if args.runs < 1 or args.size <= 0:
        p.error("--runs must be >= 1 and --size > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = int(args.size * GIB)
    workdir = (args.workdir or default_workdir()).resolve()
    check_workdir(workdir, size)
    tools = [TOOLS[name]() for name in args.tools]
    ensure_installed(tools)

    info = ensure_dataset(workdir / "dataset", size, args.seed)
    for line in describe_dataset(info):
        log(line)
    logs = workdir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    ctx = Context(
        workdir, workdir / "dataset", workdir / "data", logs, info.bytes, args.seed, args.keep
    )
    env = environment(tools, ctx)

    runs: list[ToolRun] = []
    change = ChangeSummary()
    for run_index in range(1, args.runs + 1):
        for tool in tools:
            log(f"[run {run_index}/{args.runs}] {tool.name}")
            result, change = bench_tool(tool, ctx, run_index)
            runs.append(result)

    s = summarize(runs, info.bytes)
    checks = compute_checks(s)
    if args.markdown:
        print(report_markdown(env, info, s, checks, args.runs))
    else:
        print(report_text(env, info, change, runs, s, checks, args.runs))
    if args.json:
        write_json(args.json, env, info, change, runs, s, checks)
        log(f"results written to {args.json}")
    failed = [f"{r.tool} (run {r.run})" for r in runs if not r.ok]
    if failed:
        log(f"FAILED: {', '.join(failed)}; logs in {logs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
