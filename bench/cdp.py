"""Continuous protection (#13): a protected volume and a file tree under a steady write load,
cycles at a fixed interval, tracked (dirty bitmap, change journal) against today's rescanning.

Per cycle: the time writers are held (freeze to thaw, the volume cycle's ``held_ms`` with its
``freeze_ms`` and ``transaction_ms``), the tracker's CPU and memory over the interval (the
journal tracker's ``/proc/PID/stat`` utime+stime and ``VmRSS``; the volume's daemon, which
also serves every write, for information), bytes shipped (repository growth) against the
bytes the load wrote and the bytes changed at block granularity (the volume: the bitmap's
dirty bytes; the tree: the rewritten files rounded up to 4 KiB), the achieved lag, and the
cycle's wall time, CPU and peak RSS. Each source runs at two sizes with the same load, so the
ratio of their cycle times shows whether a cycle costs what changed or what exists.

The comparison, on the same sources under the same load: for the volume,
``volume cycle --changed-since compare`` (the same freeze and view, every block read and
compared with the last point: what ``backup --image --changed-since compare`` does; the image
itself cannot be opened a second time while the daemon serves it); for the tree,
``strongroom backup TREE`` against its parent (today's full metadata walk, what each cycle of
``protect --every`` starts with), into a repository of its own.

The volume cycle and the journal cycle run through this script's ``cycle-volume`` and
``cycle-tree`` helpers (one process per cycle, measured like any command): ``volume cycle
--json`` does not print ``freeze_ms``/``transaction_ms``, and no command runs a journal cycle
yet (``services/journal.py: journal_cycle`` is called directly; the policy service will).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import cli
from harness.cdp_load import TREE_BLOCK, fill_file, proc_cpu, proc_rss, tree_cache
from harness.checks import CHECK_ALIGN, CHECK_HEADER, Check, Failures, check_rows, info
from harness.environment import head_markdown, head_text
from harness.environment import machine as machine_record
from harness.report import finish
from harness.spawn import log, run_measured, tail, version
from harness.stats import Spread
from harness.strongroom import FAST_KDF, strongroom_cmd, strongroom_env
from harness.tables import sentences, table_for
from harness.workspace import GIB, KIB, MIB, fresh_dir, prepare, require, tree_bytes

# (volume GiB small, large), (tree files small, large), MB/s, cycle s, measured cycles, hot MiB
DEFAULT = ((1.0, 10.0), (10_000, 100_000), 5.0, 60.0, 3, 512)
QUICK = ((0.25, 1.0), (2_000, 10_000), 2.0, 3.0, 2, 64)
FILL = 0.5  # share of each volume filled with data before the cycles (what compare must read)
TICK = 0.1  # the writers' pace: a budget of bytes every tick


# --- the load: writer processes (``cdp.py writer-volume|writer-tree``) -----------------------


def _pace(rate: float, log_path: Path, one: Callable[[int], list[tuple[float, int, str]]]) -> int:
    """Call ``one(budget)`` every tick with the bytes due (open loop at ``rate`` B/s, at most
    two ticks' worth a call) until SIGTERM; each write is logged as ``time bytes path``, the
    time taken when the write returned (a writer that falls behind shows it in the log)."""
    stop = False

    def halt(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, halt)
    t0, done, most = time.time(), 0, max(1, int(2 * rate * TICK))
    with open(log_path, "a") as out:
        while not stop:
            due = int(rate * (time.time() - t0)) - done
            if due > 0:
                for when, size, path in one(min(due, most)):
                    done += size
                    out.write(f"{when:.4f} {size} {path}\n")
                out.flush()
            time.sleep(TICK)
    return 0


def writer_volume_main(argv: list[str]) -> int:
    """Random aligned writes into one file on the volume, fdatasync'd every tick."""
    target, rate, write_kib, seed, log_path = argv
    size, chunk = os.path.getsize(target), int(write_kib) * KIB
    rng = random.Random(int(seed))
    fd = os.open(target, os.O_RDWR)

    def one(budget: int) -> list[tuple[float, int, str]]:
        out = []
        while budget > 0:
            offset = rng.randrange(size // chunk) * chunk
            os.pwrite(fd, os.urandom(chunk), offset)
            out.append((chunk, str(offset)))
            budget -= chunk
        os.fdatasync(fd)
        now = time.time()  # acknowledged: the fdatasync returned
        return [(now, n, where) for n, where in out]

    return _pace(float(rate), Path(log_path), one)


def writer_tree_main(argv: list[str]) -> int:
    """Whole files of the tree rewritten with new content; one operation in 50 creates a file
    and one in 50 deletes one (the count stays steady). With ``hot`` > 0 the writes go to the
    files of that many folders only (the same number at every tree size: a working set, as
    real trees have); 0 scatters them over the whole tree."""
    root, rate, seed, log_path, hot = argv
    rng = random.Random(int(seed))
    files = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
    dirs = sorted({os.path.dirname(f) for f in files})
    if int(hot) > 0:
        dirs = sorted(rng.sample(dirs, min(int(hot), len(dirs))))
        keep = set(dirs)
        files = [f for f in files if os.path.dirname(f) in keep]
    made = 0

    def one(budget: int) -> list[tuple[float, int, str]]:
        nonlocal made
        out: list[tuple[float, int, str]] = []
        while budget > 0:
            roll = rng.random()
            if roll < 0.02 and len(files) > 1:
                rel = files.pop(rng.randrange(len(files)))
                os.unlink(os.path.join(root, rel))
                out.append((time.time(), 0, rel))
                continue
            if roll < 0.04:
                made += 1
                rel = os.path.join(rng.choice(dirs), f"new-{seed}-{made}-{time.time_ns()}")
                files.append(rel)
            else:
                rel = files[rng.randrange(len(files))]
            size = rng.randint(1, 2 * TREE_BLOCK)
            with open(os.path.join(root, rel), "wb") as f:
                f.write(os.urandom(size))
            out.append((time.time(), size, rel))
            budget -= size
        return out

    return _pace(float(rate), Path(log_path), one)


# --- one cycle, in its own process (``cdp.py cycle-volume|cycle-tree``) -----------------------


def _open_repo() -> Any:
    from strongroom.services.session import LockMode, open_repository

    password = os.environ["STRONGROOM_PASSWORD"].encode()
    return open_repository(os.environ["STRONGROOM_REPO"], password, lock=LockMode.SHARED)


def cycle_volume_main(argv: list[str]) -> int:
    """One ``volume cycle`` (MODE: auto or compare); prints the point's whole summary."""
    from strongroom.services.volume_cycle import volume_cycle
    from strongroom.services.volumes import find_volume

    mount, mode = argv
    with _open_repo() as repo:
        cut = time.time()
        result = volume_cycle(repo, find_volume(mount), changed_since=mode)
    doc = {"cut": result.frozen_at or cut, "tracker": result.tracker, "summary": result.summary}
    doc["frozen_at"], doc["thawed_at"] = result.frozen_at, result.thawed_at
    print(json.dumps(doc, default=str))
    return 0


def cycle_tree_main(argv: list[str]) -> int:
    """One journal cycle of TREE (state folder STATE); prints what it did."""
    from strongroom.services.backup import BackupRequest
    from strongroom.services.journal import journal_cycle, take_sequence

    tree, state = argv
    with _open_repo() as repo:
        cut = time.time()
        seq = take_sequence(state)
        asked = time.time()
        request = BackupRequest(paths=[tree], host=socket.gethostname())
        result, journal = journal_cycle(repo, tree, state, request, seq=seq)
    doc: dict[str, object] = {"cut": cut, "journal": journal}
    doc["barrier_s"], doc["backup_s"] = asked - cut, time.time() - asked
    doc["point"] = result.point.id if result.point else None
    doc["summary"] = result.summary.as_dict()
    print(json.dumps(doc, default=str))
    return 0


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Cycle:
    """One measured cycle; ``cut`` is the instant its point is of (the freeze for the volume,
    the start of the journal cycle or of the walk for the tree)."""

    index: int
    start: float
    end: float
    cut: float
    seconds: float
    cpu_seconds: float = 0.0
    peak_rss_kib: int = 0
    shipped: int = 0
    written: int = 0
    changed: int = 0  # at block granularity
    tracker_cpu_pct: float | None = None  # over the interval from the previous cycle's start
    tracker_rss: int | None = None
    lag: float | None = None  # end minus the previous point's cut: the age just before it
    held_ms: float | None = None
    freeze_ms: float | None = None
    transaction_ms: float | None = None
    tracker: str = ""
    read: int | None = None
    barrier_s: float | None = None  # the tree: waiting for the tracker's answer (S)
    backup_s: float | None = None  # the tree: the journal cycle's own work after S


@dataclass
class Phase:
    source: str  # volume | tree
    size: str  # its label (1 GiB, 100000 files)
    scale: str  # small | large
    mode: str  # tracked | rescan
    round: int
    cycles: list[Cycle] = field(default_factory=list)


def load_log(path: Path) -> list[tuple[float, int, str]]:
    found: list[tuple[float, int, str]] = []
    try:
        text = path.read_text()
    except OSError:
        return found
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            found.append((float(parts[0]), int(parts[1]), parts[2]))
    return found


def account(cycles: list[Cycle], writes: list[tuple[float, int, str]], source: str) -> None:
    """Bytes the load wrote between two cycles' cuts, and the bytes that changed at block
    granularity (the tree: the last version of each file written, in 4 KiB blocks; the
    volume's comes from its bitmap)."""
    for prev, cur in itertools.pairwise(cycles):
        inside = [w for w in writes if prev.cut <= w[0] < cur.cut]
        cur.written = sum(w[1] for w in inside)
        if source == "tree":
            last: dict[str, int] = {}
            for _, size, path in inside:
                last[path] = size
            cur.changed = sum(-(-s // TREE_BLOCK) * TREE_BLOCK for s in last.values())


class Bench:
    def __init__(self, args: argparse.Namespace, run: Path, logs: Path) -> None:
        self.args, self.run, self.logs = args, run, logs
        self.failures = Failures()
        self.phases: list[Phase] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mounts: list[Path] = []
        self.env = strongroom_env(run / "repo", run / "cache")
        self.env["XDG_DATA_HOME"] = str(run / "xdg-data")

    # commands ---------------------------------------------------------------------------

    def env_for(self, repo: Path) -> dict[str, str]:
        return {**self.env, "STRONGROOM_REPO": str(repo)}

    def untimed(self, name: str, cmd: list[str], repo: Path) -> dict[str, Any] | None:
        stem = self.logs / name
        m = run_measured(cmd, self.env_for(repo), self.run, stem)
        if m.exit_code != 0:
            self.failures.fail(f"{name}: exit {m.exit_code}\n{tail(stem.with_suffix('.err'))}")
            return None
        return last_json(stem) or {}

    def start(self, name: str, cmd: list[str], repo: Path) -> subprocess.Popen[bytes]:
        stem = self.logs / name
        with open(stem.with_suffix(".err"), "w") as err, open(stem.with_suffix(".out"), "w") as o:
            err.write(f"$ {' '.join(cmd)}\n")
            err.flush()
            proc = subprocess.Popen(cmd, env=self.env_for(repo), stdout=o, stderr=err)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def helper(self, *words: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), *words]

    # the phases -------------------------------------------------------------------------

    def phase(
        self,
        phase: Phase,
        cmd: list[str],
        repo: Path,
        tracker_pid: int | None,
        check: Callable[[dict[str, Any]], str | None],
    ) -> None:
        """One warm-up cycle then ``--cycles`` measured ones, started every ``--interval``
        seconds (at once when the previous one overran)."""
        interval = self.args.interval
        cycles: list[Cycle] = []
        cpu_prev = proc_cpu(tracker_pid) if tracker_pid else None
        next_start = time.time()
        for index in range(self.args.cycles + 1):
            time.sleep(max(0.0, next_start - time.time()))
            start = time.time()
            cpu_now = proc_cpu(tracker_pid) if tracker_pid else None
            before = tree_bytes(repo)
            name = f"{phase.source}-{phase.scale}-{phase.mode}-r{phase.round}-c{index}"
            stem = self.logs / name
            m = run_measured(cmd, self.env_for(repo), self.run, stem)
            end = time.time()
            if m.exit_code != 0:
                self.failures.fail(f"{name}: exit {m.exit_code}\n{tail(stem.with_suffix('.err'))}")
                break
            doc = last_json(stem) or {}
            problem = check(doc)
            if problem and index:
                self.failures.fail(f"{name}: {problem}")
            c = Cycle(index, start, end, float(doc.get("cut") or start), m.seconds)
            c.cpu_seconds, c.peak_rss_kib = m.cpu_seconds, m.peak_rss_kib
            c.shipped = tree_bytes(repo) - before
            summary = doc.get("summary") or doc
            c.held_ms, c.freeze_ms = summary.get("held_ms"), summary.get("freeze_ms")
            c.transaction_ms = summary.get("transaction_ms")
            c.tracker = str(doc.get("tracker") or ("journal" if doc.get("journal") else "walk"))
            c.read = summary.get("bytes_read")
            c.barrier_s, c.backup_s = doc.get("barrier_s"), doc.get("backup_s")
            if phase.source == "volume":
                c.changed = int(summary.get("dirty_bytes") or 0)
                if phase.mode == "rescan":  # compare reads no bitmap: its changed blocks
                    c.changed = int(summary.get("bytes_changed") or 0)
            if cycles:
                c.lag = end - cycles[-1].cut
                if cpu_prev is not None and cpu_now is not None:
                    c.tracker_cpu_pct = 100.0 * (cpu_now - cpu_prev) / (start - cycles[-1].start)
            c.tracker_rss = proc_rss(tracker_pid) if tracker_pid else None
            cpu_prev = cpu_now
            cycles.append(c)
            log(
                f"    {name}: {m.seconds:.2f} s, shipped {c.shipped / 1e6:.1f} MB"
                + (f", held {c.held_ms:.0f} ms" if c.held_ms is not None else "")
            )
            next_start = start + interval
        phase.cycles = cycles
        self.phases.append(phase)

    def volume(self, scale: str, gib: float) -> None:
        a = self.args
        label = f"{gib:g} GiB"
        image, mount = self.run / f"vol-{scale}.qcow2", self.run / f"mnt-{scale}"
        repo = self.run / f"repo-volume-{scale}"
        mount.mkdir()
        sr = strongroom_cmd()
        log(f"[volume {label}] create, attach, fill {FILL:.0%}, first point")
        if self.untimed(f"volume-{scale}-init", [*sr, "init"], repo) is None:
            return
        size = f"{int(gib * 1024)}M"
        if (
            self.untimed(
                f"volume-{scale}-create",
                [*sr, "volume", "create", str(image), "--size", size],
                repo,
            )
            is None
        ):
            return
        attached = self.untimed(
            f"volume-{scale}-attach",
            [*sr, "--json", "volume", "attach", str(image), "--mount", str(mount)],
            repo,
        )
        if attached is None:
            return
        self.mounts.append(mount)
        daemon = int(attached.get("pid") or 0) or None
        writer: subprocess.Popen[bytes] | None = None
        try:
            hot = mount / "load.bin"
            fill_file(hot, a.hot_mib * MIB)
            fill_file(mount / "data.bin", max(0, int(gib * GIB * FILL) - a.hot_mib * MIB))
            os.sync()
            first = self.helper("cycle-volume", str(mount), "auto")
            if self.untimed(f"volume-{scale}-first", first, repo) is None:
                return
            wlog = self.logs / f"volume-{scale}-writes.log"
            writer = self.start(
                f"volume-{scale}-writer",
                self.helper(
                    "writer-volume",
                    str(hot),
                    str(a.rate * 1e6),
                    str(a.write_kib),
                    str(a.seed),
                    str(wlog),
                ),
                repo,
            )
            for r in range(1, a.runs + 1):
                for mode, how, want in (
                    ("tracked", "auto", "bitmap"),
                    ("rescan", "compare", "compare"),
                ):
                    log(f"  volume {label} {mode}, round {r}")
                    p = Phase("volume", label, scale, mode, r)

                    def check(doc: dict[str, Any], want: str = want) -> str | None:
                        got = doc.get("tracker")
                        return None if got == want else f"tracker {got}, expected {want}"

                    self.phase(p, self.helper("cycle-volume", str(mount), how), repo, daemon, check)
                    account(p.cycles, load_log(wlog), "volume")
        finally:
            if writer is not None:
                self.stop(writer)
            self.detach(mount)

    def detach(self, mount: Path) -> None:
        sr = strongroom_cmd()
        done = subprocess.run(
            [*sr, "volume", "detach", str(mount)],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            self.failures.fail(f"volume detach {mount}: {done.stderr.strip()}")
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        if mount in self.mounts:
            self.mounts.remove(mount)

    def tree(self, scale: str, files: int) -> None:
        a = self.args
        label = f"{files} files"
        root = tree_cache(self.run.parent / "cache", files, a.seed)
        state = fresh_dir(self.run / f"state-{scale}")
        repo_j, repo_r = (
            self.run / f"repo-tree-{scale}-journal",
            self.run / f"repo-tree-{scale}-rescan",
        )
        sr = strongroom_cmd()
        log(f"[tree {label}] tracker, first points")
        for repo in (repo_j, repo_r):
            if self.untimed(f"tree-{scale}-init-{repo.name}", [*sr, "init"], repo) is None:
                return
        tracker = self.start(
            f"tree-{scale}-tracker",
            [*sr, "journal", "run", str(root), "--state", str(state)],
            repo_j,
        )
        writer: subprocess.Popen[bytes] | None = None
        try:
            time.sleep(2.0)  # the tracker watches every directory before the load starts
            if tracker.poll() is not None:
                self.failures.fail(f"tree-{scale}-tracker exited {tracker.returncode}")
                return
            cycle_j = self.helper("cycle-tree", str(root), str(state))
            rescan = [*sr, "--json", "backup", str(root)]
            if self.untimed(f"tree-{scale}-first-journal", cycle_j, repo_j) is None:
                return
            if self.untimed(f"tree-{scale}-first-rescan", rescan, repo_r) is None:
                return
            wlog = self.logs / f"tree-{scale}-writes.log"
            writer = self.start(
                f"tree-{scale}-writer",
                self.helper(
                    "writer-tree",
                    str(root),
                    str(a.rate * 1e6),
                    str(a.seed),
                    str(wlog),
                    str(a.hot_dirs),
                ),
                repo_j,
            )
            for r in range(1, a.runs + 1):
                for mode, cmd, repo in (("tracked", cycle_j, repo_j), ("rescan", rescan, repo_r)):
                    log(f"  tree {label} {mode}, round {r}")
                    p = Phase("tree", label, scale, mode, r)

                    def check(doc: dict[str, Any], mode: str = mode) -> str | None:
                        if mode == "tracked" and not doc.get("journal"):
                            return "the journal was out of sync: a full comparison ran"
                        return None

                    pid = tracker.pid if mode == "tracked" else None
                    self.phase(p, cmd, repo, pid, check)
                    account(p.cycles, load_log(wlog), "tree")
        finally:
            if writer is not None:
                self.stop(writer)
            self.stop(tracker)

    def cleanup(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        for mount in list(self.mounts):
            self.detach(mount)


def last_json(stem: Path) -> dict[str, Any] | None:
    """The last JSON object a command printed to ``STEM.out`` (None if none)."""
    found = None
    try:
        lines = stem.with_suffix(".out").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            found = doc
    return found


# --- what is reported -------------------------------------------------------------------------


def per_round(
    b: Bench, source: str, scale: str, mode: str, fn: Callable[[list[Cycle]], float | None]
) -> Spread | None:
    """``fn`` of each round's measured cycles (the warm-up dropped); their spread."""
    values = []
    for p in b.phases:
        if (p.source, p.scale, p.mode) == (source, scale, mode):
            measured = [c for c in p.cycles if c.index > 0]
            v = fn(measured) if measured else None
            if v is not None:
                values.append(v)
    return Spread.of(values) if values else None


def med(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def top(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None


def share(a: Sequence[int], z: Sequence[int]) -> float | None:
    return sum(a) / sum(z) if sum(z) else None


def tracker_pct(cs: list[Cycle]) -> float | None:
    return med([c.tracker_cpu_pct for c in cs])


FIGURES: list[tuple[str, str, Callable[[list[Cycle]], float | None]]] = [
    ("cycle s", "2", lambda cs: med([c.seconds for c in cs])),
    ("CPU s", "2", lambda cs: med([c.cpu_seconds for c in cs])),
    ("work s", "2", lambda cs: med([c.backup_s for c in cs])),
    ("RSS MiB", "0", lambda cs: med([c.peak_rss_kib / 1024 for c in cs])),
    ("written MB", "1", lambda cs: med([c.written / 1e6 for c in cs])),
    ("changed MB", "1", lambda cs: med([c.changed / 1e6 for c in cs])),
    ("shipped MB", "1", lambda cs: med([c.shipped / 1e6 for c in cs])),
    ("shipped/changed", "2", lambda cs: share([c.shipped for c in cs], [c.changed for c in cs])),
    ("shipped/written", "2", lambda cs: share([c.shipped for c in cs], [c.written for c in cs])),
    ("held ms", "0", lambda cs: med([c.held_ms for c in cs])),
    ("held max ms", "0", lambda cs: top([c.held_ms for c in cs])),
    ("freeze ms", "0", lambda cs: med([c.freeze_ms for c in cs])),
    ("txn ms", "1", lambda cs: med([c.transaction_ms for c in cs])),
    ("lag max s", "1", lambda cs: top([c.lag for c in cs])),
    ("tracker CPU %", "2", tracker_pct),
    ("tracker RSS MiB", "0", lambda cs: top([(c.tracker_rss or 0) / MIB for c in cs]) or None),
]


def cell(spread: Spread | None, digits: str) -> str:
    return "-" if spread is None else f"{spread.median:.{digits}f}"


def results_table(b: Bench, markdown: bool) -> str:
    header = ["source", "size", "mode", *(name for name, _, _ in FIGURES)]
    rows = []
    for source, scales in (("volume", b.args.volume_gib), ("tree", b.args.tree_files)):
        for scale, size in zip(("small", "large"), scales, strict=True):
            label = f"{size:g} GiB" if source == "volume" else f"{size} files"
            for mode in ("tracked", "rescan"):
                spreads = [per_round(b, source, scale, mode, fn) for _, _, fn in FIGURES]
                if all(s is None for s in spreads):
                    continue
                how = {"volume": ("bitmap", "compare"), "tree": ("journal", "walk")}[source]
                rows.append(
                    [
                        source,
                        label,
                        how[mode != "tracked"],
                        *(cell(s, d) for s, (_, d, _) in zip(spreads, FIGURES, strict=True)),
                    ]
                )
    return table_for(markdown)(header, rows, "lll" + "r" * len(FIGURES))


def value(b: Bench, source: str, scale: str, mode: str, name: str) -> float | None:
    fn = next(f for n, _, f in FIGURES if n == name)
    s = per_round(b, source, scale, mode, fn)
    return None if s is None else s.median


def worst(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None


def compute_checks(b: Bench) -> list[Check]:
    both = ("small", "large")
    held = worst([value(b, "volume", s, "tracked", "held max ms") for s in both])
    cpu = worst([value(b, "tree", s, "tracked", "tracker CPU %") for s in both])
    ship = worst([value(b, "volume", s, "tracked", "shipped/changed") for s in both])
    lag = worst(
        [value(b, src, s, "tracked", "lag max s") for src in ("volume", "tree") for s in both]
    )
    checks = [
        Check(
            "volume: writers held per cycle (max)",
            held,
            "ms",
            "< 100 ms",
            None if held is None else held < 100,
        ),
        Check(
            "tree: journal tracker CPU over the interval",
            cpu,
            "%",
            "< 2 %",
            None if cpu is None else cpu < 2,
        ),
        Check(
            "volume: bytes shipped / changed (bitmap)",
            ship,
            "x",
            "<= 1.2x",
            None if ship is None else ship <= 1.2,
        ),
    ]
    if cpu is not None:
        checks[1].value = cpu  # printed with one decimal below
    for source in ("volume", "tree"):
        t = [value(b, source, s, "tracked", "cycle s") for s in both]
        r = [value(b, source, s, "rescan", "cycle s") for s in both]
        ratio = t[1] / t[0] if t[0] and t[1] else None
        checks.append(
            Check(
                f"{source}: tracked cycle, large / small size",
                ratio,
                "x",
                "<= 1.5x",
                None if ratio is None else ratio <= 1.5,
            )
        )
        if source == "tree":
            for figure, what in (("CPU s", "CPU"), ("work s", "work after S")):
                v = [value(b, source, s, "tracked", figure) for s in both]
                checks.append(
                    info(
                        f"tree: tracked cycle's {what}, large / small size",
                        v[1] / v[0] if v[0] and v[1] else None,
                    )
                )
        checks.append(
            info(
                f"{source}: rescanning cycle, large / small size",
                r[1] / r[0] if r[0] and r[1] else None,
            )
        )
        checks.append(
            info(
                f"{source}: rescanning / tracked cycle at the large size",
                r[1] / t[1] if r[1] and t[1] else None,
            )
        )
    checks.append(
        Check(
            "achieved lag (max) within two cycles",
            lag,
            "s",
            f"<= {2 * b.args.interval:g} s",
            None if lag is None else lag <= 2 * b.args.interval,
        )
    )
    return checks


def check_table(checks: list[Check], markdown: bool) -> str:
    rows = check_rows(checks)
    for row, c in zip(rows, checks, strict=True):
        if c.unit == "%" and c.value is not None:
            row[1] = f"{c.value:.2f} %"
    return table_for(markdown)(CHECK_HEADER, rows, CHECK_ALIGN)


def report(b: Bench, env: dict[str, object], checks: list[Check], markdown: bool) -> str:
    a = b.args
    setup = [
        f"volumes {' and '.join(f'{g:g} GiB' for g in a.volume_gib)} (qcow2, ext4, "
        f"{FILL:.0%} filled with random data), the load rewriting random {a.write_kib} KiB "
        f"blocks of a {a.hot_mib} MiB file at {a.rate:g} MB/s (fdatasync every {TICK:g} s)",
        f"trees of {' and '.join(str(n) for n in a.tree_files)} files (1 B-8 KiB), the load "
        f"rewriting whole files at {a.rate:g} MB/s (2 % creates, 2 % deletes) "
        + (f"in {a.hot_dirs} folders" if a.hot_dirs else "all over the tree"),
        f"a cycle every {a.interval:g} s, {a.cycles} measured after a warm-up, "
        f"{a.runs} round(s); medians of the rounds",
    ]
    setup = [line for line in setup if line.split()[0] in ("a", *(f"{s}s" for s in a.sources))]
    if markdown:
        parts = [
            head_markdown(env) + " " + sentences(setup),
            "",
            results_table(b, True),
            "",
            check_table(checks, True),
            *b.failures.markdown_lines(),
        ]
    else:
        parts = [
            *head_text(env),
            *setup,
            "",
            results_table(b, False),
            "",
            check_table(checks, False),
            *b.failures.text_lines(),
        ]
    return "\n".join(parts)


def json_doc(b: Bench, env: dict[str, object], checks: list[Check]) -> dict[str, object]:
    return {
        "benchmark": "cdp",
        "environment": env,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(b.args).items()},
        "phases": [
            {
                **{k: v for k, v in asdict(p).items() if k != "cycles"},
                "cycles": [asdict(c) for c in p.cycles],
            }
            for p in b.phases
        ],
        "checks": [asdict(c) for c in checks],
        "failures": b.failures.items,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="0.25 and 1 GiB volumes, 2,000 and 10,000 files, 2 MB/s, 3 s cycles, 2 cycles",
    )
    p.add_argument(
        "--volume-gib",
        type=float,
        nargs=2,
        default=None,
        metavar=("SMALL", "LARGE"),
        help="the two volume sizes (default 1 10)",
    )
    p.add_argument(
        "--tree-files",
        type=int,
        nargs=2,
        default=None,
        metavar=("SMALL", "LARGE"),
        help="the two tree sizes (default 10000 100000)",
    )
    p.add_argument("--rate", type=float, default=None, help="MB/s the load writes (default 5)")
    p.add_argument("--interval", type=float, default=None, help="seconds between cycle starts (60)")
    p.add_argument("--cycles", type=int, default=None, help="measured cycles a round (default 3)")
    p.add_argument("--hot-mib", type=int, default=None, help="the volume load's file (512 MiB)")
    p.add_argument("--write-kib", type=int, default=64, help="the volume load's write size (64)")
    p.add_argument(
        "--hot-dirs",
        type=int,
        default=20,
        help="folders the tree load writes in, the same at both sizes (20; 0: the whole tree)",
    )
    p.add_argument("--sources", default="volume,tree", help="volume,tree (default both)")
    cli.add_common(p, seed_help="data and load seed", keep_help="keep the run directory")
    p.add_argument("--runs", type=int, default=3, help="rounds; medians reported (default 3)")
    args = p.parse_args(argv)
    base = QUICK if args.quick else DEFAULT
    args.volume_gib = args.volume_gib or list(base[0])
    args.tree_files = args.tree_files or list(base[1])
    for name, default in zip(("rate", "interval", "cycles", "hot_mib"), base[2:], strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.sources = [s for s in args.sources.split(",") if s]
    if not set(args.sources) <= {"volume", "tree"} or not args.sources:
        p.error("--sources takes volume and/or tree")
    if args.runs < 1 or args.cycles < 1 or args.rate <= 0 or args.interval <= 0:
        p.error("--runs, --cycles, --rate and --interval must be positive")
    if min(args.volume_gib) * GIB * FILL < args.hot_mib * MIB:
        p.error("--hot-mib must fit in half of the smaller volume")
    return args


HELPERS = {
    "writer-volume": writer_volume_main,
    "writer-tree": writer_tree_main,
    "cycle-volume": cycle_volume_main,
    "cycle-tree": cycle_tree_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in HELPERS:
        return HELPERS[argv[0]](argv[1:])
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("cdp.py runs as root (loop devices, mount, fsfreeze, FUSE)")
    require(("qemu-img", "qemu-storage-daemon"), "apt-get install qemu-utils qemu-system")
    require(("losetup", "mkfs.ext4"), "apt-get install util-linux e2fsprogs")
    need = sum(args.volume_gib) * GIB * FILL * 2.5
    base = prepare(args.workdir, "cdp", need, "the volumes and their repositories")
    logs = fresh_dir(base / "logs")
    run = fresh_dir(base / "run")
    versions = {
        "strongroom": version([*strongroom_cmd(), "--version"]),
        "qemu-storage-daemon": version(["qemu-storage-daemon", "--version"]),
    }
    env = machine_record(base, versions)
    env["kdf"] = FAST_KDF
    env["strongroom_command"] = " ".join(strongroom_cmd())
    b = Bench(args, run, logs)
    try:
        if "volume" in args.sources:
            for scale, gib in zip(("small", "large"), args.volume_gib, strict=True):
                b.volume(scale, gib)
        if "tree" in args.sources:
            for scale, files in zip(("small", "large"), args.tree_files, strict=True):
                b.tree(scale, files)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        b.failures.fail(f"benchmark error: {exc}")
    finally:
        b.cleanup()
        if args.keep:
            log(f"  kept {run}")
        else:
            subprocess.run(["rm", "-rf", str(run)], check=False)
    if not b.phases and not b.failures:
        b.failures.fail("no cycle was measured")
    checks = compute_checks(b)
    text = report(b, env, checks, args.markdown)
    return finish(text, json_doc(b, env, checks), args.json, logs, b.failures)


if __name__ == "__main__":
    sys.exit(main())
