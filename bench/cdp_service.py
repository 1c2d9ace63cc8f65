"""The protection service under load (#13): one policy with a protected volume and a tracked
tree, one-minute cycles, the achieved lag that ``strongroom status`` reports, polled all along.

What ``bench/cdp.py`` measures one cycle at a time (helpers called directly), this runs as a
user does: ``strongroom protect --policy bench`` in the foreground with the policy's cycle,
the tree's tracker a child of the service, a writer per source (``cdp.py writer-volume`` and
``writer-tree``, the same loads), and ``strongroom --json status`` every few seconds. The
issue's check: with a 60-second cycle under the load, status never reports more than two
cycles of lag. Also reported: cycles done and failed, the consistency of the points, the
tracker's CPU (the journal tracker child, whole run) and the daemon's, bytes shipped a cycle.

The tree lives on its own ext4 file system (a loop device), so that its cycles freeze it as
a production tree's would (the root file system is never frozen); the state folders are on
the run directory's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import cli
from harness.cdp_load import fill_file, proc_cpu, tree_cache
from harness.checks import CHECK_ALIGN, CHECK_HEADER, Check, Failures, check_rows
from harness.environment import head_markdown, head_text
from harness.environment import machine as machine_record
from harness.report import finish
from harness.spawn import log, version
from harness.strongroom import FAST_KDF, strongroom_cmd, strongroom_env
from harness.tables import table_for
from harness.workspace import GIB, MIB, fresh_dir, prepare, require

POLL = 5.0  # seconds between two status calls
CDP = Path(__file__).with_name("cdp.py")


class Run:
    """One run: the sources, the writers, the service, the samples of status."""

    def __init__(self, args: Any, base: Path) -> None:
        self.args, self.base = args, base
        self.run = fresh_dir(base / "run")
        self.env = strongroom_env(self.run / "repo", self.run / "cache")
        self.env["XDG_DATA_HOME"] = str(self.run / "xdg-data")
        self.env["STRONGROOM_CONFIG"] = str(self.run / "config.toml")
        if args.interval < 60:  # a smoke run: the tests' override of the one-minute floor
            self.env["STRONGROOM_TEST_MIN_CYCLE"] = "1"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mounts: list[tuple[str, Path]] = []  # ("volume" | "loop", mount point)
        self.samples: list[dict[str, Any]] = []
        self.outcomes: list[dict[str, Any]] = []
        self.failures = Failures()

    def sr(self, *words: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*strongroom_cmd(), *words], env=self.env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"strongroom {' '.join(words)}: {done.stderr.strip()}")
        return done

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.run / f"{name}.out", "wb")  # noqa: SIM115 (closed with the process)
        err = open(self.run / f"{name}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def setup(self) -> tuple[Path, Path, Path, Path]:
        """The repository, an attached volume filled half, a tree on its own ext4."""
        a = self.args
        self.sr("init")
        image, vmount = self.run / "vol.qcow2", self.run / "vol-mnt"
        vmount.mkdir()
        self.sr("volume", "create", str(image), "--size", f"{int(a.volume_gib * 1024)}M")
        attached = json.loads(
            self.sr("--json", "volume", "attach", str(image), "--mount", str(vmount)).stdout
        )
        self.mounts.append(("volume", vmount))
        self.daemon = int(attached.get("pid") or 0) or None
        hot = vmount / "load.bin"
        fill_file(hot, a.hot_mib * MIB)
        fill_file(vmount / "data.bin", max(0, int(a.volume_gib * GIB / 2) - a.hot_mib * MIB))
        fs, tmount = self.run / "tree.ext4", self.run / "tree-mnt"
        tmount.mkdir()
        with open(fs, "wb") as f:
            f.truncate(2 * GIB)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
        subprocess.run(["mount", "-o", "loop", str(fs), str(tmount)], check=True)
        self.mounts.append(("loop", tmount))
        tree = tmount / "data"
        cache = self.base.parent / "cdp" / "cache"  # bench/cdp.py's generated trees, shared
        shutil.copytree(tree_cache(cache, a.tree_files, a.seed), tree)
        os.sync()
        (self.run / "config.toml").write_text(
            f'[protect.bench]\nsources = ["{tree}", "{image}"]\n'
            f'cycle = "{a.interval:g}s"\nfreeze_timeout = "10s"\n'
        )
        return image, hot, tree, vmount

    def measure(self) -> None:
        a = self.args
        _image, hot, tree, _vmount = self.setup()
        me = [sys.executable, str(CDP)]
        rate = str(a.rate * 1e6)
        self.spawn(
            "writer-volume",
            [*me, "writer-volume", str(hot), rate, "64", str(a.seed), str(self.run / "wv.log")],
        )
        self.spawn(
            "writer-tree",
            [
                *me,
                "writer-tree",
                str(tree),
                rate,
                str(a.seed),
                str(self.run / "wt.log"),
                str(a.hot_dirs),
            ],
        )
        service = self.spawn(
            "service", [*strongroom_cmd(), "--json", "protect", "--policy", "bench"]
        )
        log(f"service started; sampling status every {POLL:g} s for {a.minutes:g} min")
        started = time.monotonic()
        tracker_pid: int | None = None
        cpu0: dict[int, tuple[float, float]] = {}  # pid -> (CPU s, when) at its first sample
        while time.monotonic() - started < a.minutes * 60:
            time.sleep(POLL)
            if service.poll() is not None:
                self.failures.fail(f"the service exited {service.returncode}")
                break
            done = self.sr("--json", "status", check=False)
            try:
                doc = json.loads(done.stdout)
            except ValueError:
                continue
            doc["elapsed"] = time.monotonic() - started
            self.samples.append(doc)
            for s in doc.get("sources", []):
                if s.get("kind") == "tree" and tracker_pid is None:
                    tracker_pid = _tracker_pid(Path(s["state_folder"]))
            for pid in (tracker_pid, self.daemon):
                if pid and pid not in cpu0:
                    cpu0[pid] = (proc_cpu(pid) or 0.0, time.monotonic())
        self.cpu: dict[str, float] = {}
        for name, pid in (("tracker", tracker_pid), ("daemon", self.daemon)):
            if pid is not None and pid in cpu0:
                c0, t0 = cpu0[pid]
                c1 = proc_cpu(pid)
                if c1 is not None:
                    self.cpu[name] = 100 * (c1 - c0) / (time.monotonic() - t0)
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(120)
        except subprocess.TimeoutExpired:
            service.kill()
            self.failures.fail("the service did not stop within 120 s of SIGTERM")
        for line in (self.run / "service.out").read_text().splitlines():
            try:
                self.outcomes.append(json.loads(line))
            except ValueError:
                pass

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for kind, mount in reversed(self.mounts):
            if kind == "volume":
                self.sr("volume", "detach", str(mount), check=False)
            else:
                subprocess.run(["umount", str(mount)], check=False)


def _tracker_pid(state: Path) -> int | None:
    try:
        return int(json.loads((state / "journal" / "tracker.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def summarize(r: Run) -> tuple[list[list[str]], list[Check]]:
    a = r.args
    rows, checks = [], []
    names = sorted({s["source"] for doc in r.samples for s in doc.get("sources", [])})
    for name in names:
        seen = [s for doc in r.samples for s in doc["sources"] if s["source"] == name]
        lags = [s["lag_seconds"] for s in seen if s.get("lag_seconds") is not None]
        mine = [o for o in r.outcomes if o.get("source") == name]
        ok = [o for o in mine if not o.get("error")]
        shipped = [int(o.get("bytes_shipped") or 0) for o in ok[1:]]  # the first is full
        kinds = {s.get("kind") for s in seen}
        cpu = r.cpu.get("tracker" if "tree" in kinds else "daemon")
        worst = max(lags) if lags else None
        rows.append(
            [
                name,
                "/".join(sorted(k for k in kinds if k)),
                str(len(ok)),
                str(len(mine) - len(ok)),
                ", ".join(sorted({str(o.get("consistency")) for o in ok})),
                f"{worst:.1f}" if worst is not None else "-",
                f"{statistics.median(lags):.1f}" if lags else "-",
                f"{statistics.median(shipped) / 1e6:.1f}" if shipped else "-",
                f"{cpu:.2f}" if cpu is not None else "-",
                str(sum(1 for s in seen if s.get("tracker_in_sync") is False)),
            ]
        )
        checks.append(
            Check(
                f"{name}: worst lag status reported",
                worst,
                "s",
                f"<= {2 * a.interval:g} s (two cycles)",
                None if worst is None else worst <= 2 * a.interval,
            )
        )
        if "tree" in kinds and cpu is not None:
            checks.append(
                Check(f"{name}: journal tracker CPU, whole run", cpu, "%", "< 2 %", cpu < 2)
            )
    return rows, checks


HEADER = [
    "source",
    "kind",
    "cycles ok",
    "cycles failed",
    "consistency",
    "lag max s",
    "lag median s",
    "shipped MB/cycle",
    "tracker/daemon CPU %",
    "samples out of sync",
]


def parse_args(argv: Sequence[str] | None) -> Any:
    p = cli.parser(__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 0.75 min, 10 s cycles, 0.25 GiB, 2,000 files, 2 MB/s",
    )
    p.add_argument("--minutes", type=float, default=6.0, help="how long the service runs (6)")
    p.add_argument("--interval", type=float, default=60.0, help="the policy's cycle, s (60)")
    p.add_argument("--volume-gib", type=float, default=1.0, help="the volume's size (1)")
    p.add_argument("--tree-files", type=int, default=20_000, help="the tree's files (20,000)")
    p.add_argument("--rate", type=float, default=5.0, help="MB/s each writer writes (5)")
    p.add_argument("--hot-mib", type=int, default=256, help="the volume load's file (256)")
    p.add_argument("--hot-dirs", type=int, default=20, help="folders the tree load writes in")
    cli.add_common(p, seed_help="data and load seed", keep_help="keep the run directory")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.interval, args.volume_gib = 0.75, 10.0, 0.25
        args.tree_files, args.rate, args.hot_mib = 2000, 2.0, 32
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("cdp_service.py runs as root (loop devices, mount, fsfreeze, FUSE)")
    require(("qemu-img", "qemu-storage-daemon"), "apt-get install qemu-utils qemu-system")
    require(("losetup", "mkfs.ext4"), "apt-get install util-linux e2fsprogs")
    base = prepare(
        args.workdir, "cdp-service", args.volume_gib * GIB * 2, "the volume and repository"
    )
    env = machine_record(base, {"strongroom": version([*strongroom_cmd(), "--version"])})
    env["kdf"] = FAST_KDF
    r = Run(args, base)
    try:
        r.measure()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        r.failures.fail(f"benchmark error: {exc}")
    finally:
        r.cleanup()
        if not args.keep:
            shutil.rmtree(r.run, ignore_errors=True)
    rows, checks = summarize(r)
    table = table_for(args.markdown)
    setup = (
        f"one policy, a {args.volume_gib:g} GiB protected volume and a {args.tree_files}-file "
        f"tree, {args.interval:g} s cycles, {args.rate:g} MB/s into each, "
        f"{args.minutes:g} min; status every {POLL:g} s ({len(r.samples)} samples)"
    )
    head = head_markdown(env) if args.markdown else "\n".join(head_text(env))
    text = "\n\n".join(
        [
            f"{head} {setup}.",
            table(HEADER, rows, "lllllrrrrr"),
            table(CHECK_HEADER, check_rows(checks), CHECK_ALIGN),
        ]
    )
    doc = {"env": env, "rows": rows, "checks": [c.__dict__ for c in checks], "samples": r.samples}
    return finish(text, doc, args.json, base, r.failures)


if __name__ == "__main__":
    sys.exit(main())
