"""Golden images (seeds, issue #12): a real Debian machine backed up into an empty repository,
into one holding its OS and application seeds, and with --trust-seed-metadata; restic and borg
back up the same machine into fresh repositories.

The machine is the seed tests' (tests/helpers/debian.py, built once and cached in
``$STRONGROOM_TEST_CACHE``, default /var/tmp/strongroom-test-cache, by running
``python -m tests.helpers.debian``): an ``mmdebstrap --variant=minbase bookworm`` root with
nginx-light and sqlite3 installed, configuration edited, package files patched, files deleted,
about 19 MB of user data under /home and /srv (9,400 entries, 205 MB). The seeds: the golden
minbase tar (OS) and the two applications' ``.deb`` files with the libraries minbase lacks.

Modes, each in its own fresh repository every round (the seeded repository is prepared once
and copied, so every round's backup is a first backup):

* ``empty``: ``strongroom backup MACHINE`` into an empty repository (mode 1);
* ``seeded``: into a repository holding the three seeds (mode 2);
* ``trusted``: as ``seeded`` with ``--trust-seed-metadata`` (mode 3);
* ``restic``, ``borg``: their default settings, fresh repositories.

Per run: wall time, CPU, peak RSS (``harness/launcher.py``), bytes read (``rchar`` of
/proc/PID/io, read by a small wrapper just before the tool is reaped: every byte the tool got
from ``read(2)``, page cache hits included, since the cache is warm for every tool), and bytes
stored (the repository's growth, files' sizes). Median of ``--runs`` rounds (default 3).

Targets (issue #12): ``seeded`` stores at most 1.2x the machine's own bytes (own and modified
files, from the test data's expected classification); ``trusted`` takes at most a quarter of
``empty``'s time, and less than restic's and borg's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import cli
from harness.checks import CHECK_ALIGN, CHECK_HEADER, Check, Failures, check_rows, info, ratio_check
from harness.environment import head_markdown, head_text, machine
from harness.peers import Borg, Restic, Space, Tool, available, tool_env
from harness.report import finish
from harness.spawn import log, run_measured, tail
from harness.stats import Spread, median_index
from harness.strongroom import FAST_KDF, strongroom_cmd, strongroom_env, summary_json
from harness.tables import sentences, table_for
from harness.workspace import evict, fresh_dir, prepare, tree_bytes, warm

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("empty", "seeded", "trusted")
PEERS: dict[str, type[Tool]] = {"restic": Restic, "borg": Borg}
SEEDED_TARGET = 1.2  # stored / the machine's own bytes
TRUSTED_TARGET = 0.25  # trusted time / empty time

# Runs the tool, then reads its /proc/PID/io while it is a zombie (waitid WNOWAIT), before
# reaping it: the counters of a process that has exited but not been waited for are final.
IO_WRAPPER = """
import os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
try:
    with open(f"/proc/{pid}/io") as f:
        text = f.read()
except OSError:
    text = ""
_, status = os.waitpid(pid, 0)
with open(out, "w") as f:
    f.write(text)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Data:
    """The machine and its seeds, from the tests' cache."""

    root: Path  # the cache folder (tests/helpers/debian.py's DebianData.root)
    expected: dict[str, Any]

    @property
    def machine(self) -> Path:
        return self.root / "machine"

    @property
    def golden_tar(self) -> Path:
        return self.root / "golden.tar"

    def debs(self, app: str) -> list[Path]:
        return [self.root / "debs" / name for name in self.expected["seeds"][app]["debs"]]

    def bytes_of(self, *classes: str) -> int:
        totals = self.expected["totals"]
        return sum(int(totals.get(c, {}).get("bytes", 0)) for c in classes)


def load_data() -> Data:
    """Build (or find) the Debian data with the tests' builder; exit with its message if it
    cannot be built here (not root, no mmdebstrap, no network)."""
    log("Debian data: python -m tests.helpers.debian (built once, then cached) ...")
    done = subprocess.run(
        [sys.executable, "-m", "tests.helpers.debian"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the Debian data cannot be built: {done.stderr.strip() or done.stdout}")
    root = Path(done.stdout.splitlines()[0].split(" (")[0])
    with open(root / "expected.json", encoding="utf-8") as f:
        return Data(root, json.load(f))


@dataclass
class Run:
    """One timed backup."""

    seconds: float
    cpu_seconds: float
    peak_rss_kib: int
    read_chars: int  # rchar: bytes returned by read(2) and friends
    read_disk: int  # read_bytes: bytes the block layer fetched (page cache misses)
    stored: int  # repository growth
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    data: Data
    run_dir: Path
    logs: Path
    modes: list[str]
    peers: list[Tool]
    keep: bool
    failures: Failures = field(default_factory=Failures)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seeded_repo: Path | None = None  # prepared once, copied per round
    seed_seconds: dict[str, float] = field(default_factory=dict)
    cold: bool = False  # evict the machine's files from the page cache before each run


def io_counters(path: Path) -> dict[str, int]:
    counters = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            counters[key.strip()] = int(value)
    except (OSError, ValueError):
        pass
    return counters


def measure(
    ctx: Ctx,
    cmd: list[str],
    env: dict[str, str],
    stem: Path,
    cwd: Path,
    ok: frozenset[int] = frozenset({0}),
) -> Run | None:
    """Run ``cmd`` timed on a warm page cache (or, with ``--cold``, with the machine's
    files evicted from it); None (and a failure) if it failed."""
    if ctx.cold:
        evict([ctx.data.machine])
    else:
        warm([ctx.data.machine])
    io_file = stem.with_suffix(".io")
    wrapped = [sys.executable, "-I", "-S", "-c", IO_WRAPPER, str(io_file), *cmd]
    m = run_measured(wrapped, env, cwd, stem)
    if m.exit_code not in ok:
        ctx.failures.fail(f"{stem.name}: exit {m.exit_code}: {tail(stem.with_suffix('.err'), 3)}")
        return None
    io = io_counters(io_file)
    return Run(
        m.seconds, m.cpu_seconds, m.peak_rss_kib, io.get("rchar", 0), io.get("read_bytes", 0), 0
    )


def untimed(ctx: Ctx, cmd: list[str], env: dict[str, str], stem: Path) -> bool:
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".out"), "w") as out, open(stem.with_suffix(".err"), "w") as err:
        err.write(f"$ {' '.join(cmd)}\n")
        err.flush()
        done = subprocess.run(cmd, env=env, stdout=out, stderr=err, check=False)
    if done.returncode != 0:
        ctx.failures.fail(
            f"{stem.name}: exit {done.returncode}: {tail(stem.with_suffix('.err'), 3)}"
        )
    return done.returncode == 0


# --------------------------------------------------------------------- strongroom


def sr_env(repo: Path) -> dict[str, str]:
    return strongroom_env(repo, repo.parent / "cache", FAST_KDF)


def prepare_seeded(ctx: Ctx) -> Path | None:
    """A repository holding the OS seed and the two application seeds (once; timed for the
    notes). None if a seed cannot be added (seeds from tar and .deb not in this build)."""
    repo = ctx.run_dir / "seeded-template" / "repo"
    env = sr_env(repo)
    sr = strongroom_cmd()
    if not untimed(ctx, [*sr, "init"], env, ctx.logs / "seeded-init"):
        return None
    adds = {
        "golden": [str(ctx.data.golden_tar), "--kind", "os"],
        "nginx-light": [*map(str, ctx.data.debs("nginx-light")), "--kind", "app"],
        "sqlite3": [*map(str, ctx.data.debs("sqlite3")), "--kind", "app"],
    }
    for name, args in adds.items():
        stem = ctx.logs / f"seed-add-{name}"
        m = run_measured([*sr, "seed", "add", name, *args], env, ctx.run_dir, stem)
        if m.exit_code != 0:
            ctx.failures.fail(f"seed add {name}: {tail(stem.with_suffix('.err'), 2)}")
            return None
        ctx.seed_seconds[name] = m.seconds
    return repo


def strongroom_round(ctx: Ctx, mode: str, index: int) -> Run | None:
    sr = strongroom_cmd()
    space = fresh_dir(ctx.run_dir / f"{mode}-{index}")
    repo = space / "repo"
    env = sr_env(repo)
    if mode == "empty":
        if not untimed(ctx, [*sr, "init"], env, ctx.logs / f"{mode}-{index}-init"):
            return None
        extra: list[str] = []
    else:
        if ctx.seeded_repo is None:
            return None
        shutil.copytree(ctx.seeded_repo, repo)
        extra = ["--seed-root", str(ctx.data.machine)]
        if mode == "trusted":
            extra.append("--trust-seed-metadata")
    before = tree_bytes(repo)
    stem = ctx.logs / f"{mode}-{index}-backup"
    cmd = [*sr, "backup", str(ctx.data.machine), *extra, "--json"]
    run = measure(ctx, cmd, env, stem, space)
    if run is None:
        return None
    run.stored = tree_bytes(repo) - before
    run.summary = summary_json(stem)
    if mode != "empty" and not (run.summary.get("seeds") or {}).get("used"):
        ctx.failures.fail(f"{mode}-{index}: the point builds on no seed")
    if mode == "seeded" and index == 1:
        verify_restore(ctx, repo, env, space)
    if not ctx.keep:
        shutil.rmtree(space, ignore_errors=True)
    return run


def verify_restore(ctx: Ctx, repo: Path, env: dict[str, str], space: Path) -> None:
    """The seeded point restored in full equals the machine: ``rsync -aHAXn --checksum
    --delete`` prints nothing (contents, modes, owners, mtimes, links, devices, xattrs; the
    machine has device nodes under /dev, which harness.verify would try to read). Not the
    trusted point: the file changed behind its mtime is the seed's there, by design."""
    target = space / "restore"
    if not untimed(
        ctx, [*strongroom_cmd(), "restore", "latest", "--target", str(target)], env,
        ctx.logs / "seeded-restore",
    ):  # fmt: skip
        return
    restored = target / str(ctx.data.machine).lstrip("/")
    done = subprocess.run(
        ["rsync", "-aHAXn", "--numeric-ids", "--checksum", "--itemize-changes", "--delete",
         f"{ctx.data.machine}/", f"{restored}/"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0 or done.stdout.strip():
        differs = (done.stdout + done.stderr).strip().splitlines()[:3]
        ctx.failures.fail(f"seeded restore differs from the machine: {differs}")
    shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------- peers


def peer_round(ctx: Ctx, tool: Tool, index: int) -> Run | None:
    root = fresh_dir(ctx.run_dir / f"{tool.name}-{index}")
    space = Space(root, ctx.data.machine, ctx.logs)
    env = tool_env(tool, space)
    if not untimed(ctx, tool.init(space), env, ctx.logs / f"{tool.name}-{index}-init"):
        return None
    stem = ctx.logs / f"{tool.name}-{index}-backup"
    run = measure(ctx, tool.backup(space, f"bench-{index}"), env, stem, root, tool.ok_codes)
    if run is not None:
        run.stored = tree_bytes(space.repo)
    if not ctx.keep:
        shutil.rmtree(root, ignore_errors=True)
    return run


# --------------------------------------------------------------------- report


def median_run(runs: list[Run]) -> Run | None:
    return runs[median_index([r.seconds for r in runs])] if runs else None


def spread(runs: list[Run], key: str) -> Spread | None:
    values = [float(getattr(r, key)) for r in runs]
    return Spread.of(values) if values else None


def rows(ctx: Ctx) -> list[list[str]]:
    machine_bytes = ctx.data.bytes_of("identical", "modified", "moved", "own")
    out = []
    for name, runs in ctx.runs.items():
        m, s = median_run(runs), spread(runs, "seconds")
        if m is None or s is None:
            out.append([name, "n/a", "", "", "", "", "", ""])
            continue
        stored = Spread.of(float(r.stored) for r in runs).median
        read = Spread.of(float(r.read_chars) for r in runs).median
        out.append(
            [
                name,
                s.text(2),
                f"{Spread.of(r.cpu_seconds for r in runs).median:.2f}",
                f"{max(r.peak_rss_kib for r in runs) / 1024:.0f}",
                f"{read / 1e6:.1f}",
                f"{Spread.of(float(r.read_disk) for r in runs).median / 1e6:.1f}",
                f"{stored / 1e6:.1f}",
                f"{stored / machine_bytes:.3f}",
            ]
        )
    return out


HEADER = [
    "run",
    "s (range)",
    "CPU s",
    "peak RSS MiB",
    "read MB",
    "disk read MB",
    "stored MB",
    "stored/machine",
]
ALIGN = "lrrrrrrr"


def median_of(ctx: Ctx, name: str, key: str) -> float | None:
    runs = ctx.runs.get(name) or []
    return Spread.of(float(getattr(r, key)) for r in runs).median if runs else None


def checks(ctx: Ctx) -> list[Check]:
    own = ctx.data.bytes_of("own", "modified")
    t_empty, t_trusted = median_of(ctx, "empty", "seconds"), median_of(ctx, "trusted", "seconds")
    found = [
        ratio_check(
            "seeded: stored / machine's own bytes",
            median_of(ctx, "seeded", "stored"),
            own,
            SEEDED_TARGET,
            upper=True,
        ),
        ratio_check("trusted: time / empty's time", t_trusted, t_empty, TRUSTED_TARGET, upper=True),
    ]
    for peer in ("restic", "borg"):
        found.append(
            ratio_check(
                f"trusted: time / {peer}'s",
                t_trusted,
                median_of(ctx, peer, "seconds"),
                1.0,
                upper=True,
            )
        )
    found.append(
        info(
            "seeded: time / empty's time",
            ratio_or_none(median_of(ctx, "seeded", "seconds"), t_empty),
        )
    )
    found.append(
        info(
            "trusted: bytes read / empty's",
            ratio_or_none(
                median_of(ctx, "trusted", "read_chars"), median_of(ctx, "empty", "read_chars")
            ),
        )
    )
    return found


def ratio_or_none(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def preamble(ctx: Ctx) -> list[str]:
    d = ctx.data
    totals = d.expected["totals"]
    files = sum(int(t["files"]) for t in totals.values())
    total = d.bytes_of("identical", "modified", "moved", "own")
    lines = [
        f"machine: {d.machine} ({files} files, {total / 1e6:.1f} MB); "
        f"own {d.bytes_of('own') / 1e6:.1f} MB + modified {d.bytes_of('modified') / 1e6:.1f} MB "
        f"(the machine's own bytes), moved {d.bytes_of('moved') / 1e6:.2f} MB, "
        f"identical to a seed {d.bytes_of('identical') / 1e6:.1f} MB",
    ]
    if ctx.seed_seconds:
        lines.append(
            "seeds added once (not timed in the rounds): "
            + ", ".join(f"{n} {s:.1f} s" for n, s in ctx.seed_seconds.items())
        )
    lines += ctx.notes
    return lines


def report_text(env: dict[str, object], ctx: Ctx, markdown: bool) -> str:
    table = table_for(markdown)
    parts = [head_markdown(env) if markdown else "\n".join(head_text(env))]
    parts.append(sentences(preamble(ctx)) if markdown else "\n".join(preamble(ctx)))
    parts.append(table(HEADER, rows(ctx), ALIGN))
    parts.append(table(CHECK_HEADER, check_rows(checks(ctx)), CHECK_ALIGN))
    text = "\n\n".join(parts)
    return text + "\n" + "\n".join(ctx.failures.text_lines())


# --------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="one round (the data has one size)")
    p.add_argument(
        "--modes", default=",".join(MODES), help="strongroom modes: empty,seeded,trusted"
    )
    p.add_argument("--peers", default="restic,borg", help="peers to run: restic,borg or none")
    p.add_argument(
        "--cold",
        action="store_true",
        help="evict the machine's files from the page cache before each timed run "
        "(posix_fadvise DONTNEED): reads come from disk, as on a machine just booted",
    )
    p.add_argument(
        "--no-install", action="store_true", help="skip missing peers (no apt-get install)"
    )
    cli.add_common(p, keep_help="keep the repositories", runs=True)
    p.set_defaults(runs=3)
    args = p.parse_args(argv)
    cli.check_runs(p, args)
    if args.quick:
        args.runs = 1
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in args.modes if m not in MODES]:
        p.error(f"unknown mode(s): {', '.join(unknown)}; choose from {', '.join(MODES)}")
    names = [] if args.peers.strip() == "none" else args.peers.split(",")
    args.peers = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if unknown := [n for n in args.peers if n not in PEERS]:
        p.error(f"unknown peer(s): {', '.join(unknown)}; choose from restic, borg or none")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = prepare(args.workdir, "seeds", 2e9)
    data = load_data()
    peers, skipped = available([PEERS[n]() for n in args.peers], not args.no_install)
    logs, run_dir = fresh_dir(base / "logs"), fresh_dir(base / "run")
    ctx = Ctx(data, run_dir, logs, args.modes, peers, args.keep, cold=args.cold)
    ctx.notes.append(
        "page cache: cold (machine evicted before each run)"
        if args.cold
        else "page cache: warm (machine read before each run)"
    )
    ctx.notes += [f"skipped: {s}" for s in skipped]
    versions = {"strongroom": " ".join(strongroom_cmd())} | {t.name: t.version() for t in peers}
    env = machine(base, versions)
    env["kdf"] = FAST_KDF
    if {"seeded", "trusted"} & set(args.modes):
        ctx.seeded_repo = prepare_seeded(ctx)
        if ctx.seeded_repo is None:
            ctx.notes.append("seeded and trusted not measured: the seeds could not be added")
    names = [*args.modes, *(t.name for t in peers)]
    ctx.runs = {n: [] for n in names}
    for index in range(1 - args.warmup, args.runs + 1):
        log(f"[round {index}/{args.runs}]" if index > 0 else "[warm-up]")
        for name in names:
            tool = next((t for t in peers if t.name == name), None)
            run = peer_round(ctx, tool, index) if tool else strongroom_round(ctx, name, index)
            if run is not None and index > 0:
                ctx.runs[name].append(run)
                log(
                    f"  {name}: {run.seconds:.2f} s, read {run.read_chars / 1e6:.1f} MB, "
                    f"stored {run.stored / 1e6:.1f} MB"
                )
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    doc = {
        "environment": env,
        "data": {"root": str(data.root), "totals": data.expected["totals"]},
        "seed_seconds": ctx.seed_seconds,
        "runs": {n: [asdict(r) for r in runs] for n, runs in ctx.runs.items()},
        "checks": [asdict(c) for c in checks(ctx)],
        "failures": ctx.failures.items,
        "notes": ctx.notes,
    }
    return finish(report_text(env, ctx, args.markdown), doc, args.json, logs, ctx.failures)


if __name__ == "__main__":
    sys.exit(main())
