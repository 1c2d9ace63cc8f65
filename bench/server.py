#!/usr/bin/env python3
"""The backup server (#15): 1, 2, 4 and 8 agents backing up at once through `strongroom server`
into a Ceph RADOS Gateway bucket with a PostgreSQL catalog, against restic writing the same
trees straight to the same gateway; and the dashboard's pages at 10,000 points over HTTP.

Set-up (not timed): a RADOS Gateway (``.ci/ceph-rgw-up.sh`` in the run folder: one monitor, one
memstore OSD, the gateway, all on this machine) and a PostgreSQL cluster (``initdb``/``pg_ctl``
as nobody, a unix socket) from ``harness/services.py``. Each agent's tree is its own data set
(``harness/dataset.py``, seed per agent: text, small files, compressed and random files, a large
mixed file) plus one shared data set that every agent backs up too (a quarter of its bytes: the
same files, so deduplication across machines is exercised). ``--quick``: 64 MiB per agent;
default 512 MiB.

Each scenario (N agents) starts from nothing: a new bucket, a new catalog database, one
``strongroom server`` process (two for 8 agents with ``--two-servers``: half the agents name
each first), N machines enrolled with ``strongroom agent enroll``; then N ``strongroom backup
OWN SHARED --json --agent-config ...`` at once (timed together: aggregate MB/s is the source
bytes of all N over the wall time from the first start to the last end), then the same N again
with nothing changed (the second round: the parent point is found, unchanged files are not
read). Measured per scenario: the server process's CPU seconds and peak RSS (``/proc``, the
peak reset before each round), the agents' CPU (summed) and largest RSS (``wait4`` through the
launcher), the machine's CPU busy share, and the deduplication negotiation from the agents'
summaries (``traffic``: ``missing`` round trips and their request and answer bodies, and all
requests), per GB of source. restic 0.14: one repository in its own bucket shared by the N
agents (as the strongroom repository is), ``restic -r s3:ENDPOINT/BUCKET backup OWN SHARED
--host agentI``, each agent its own cache folder; the same two rounds.

Dashboard (``--points``, default 10,000; 0 skips): a new bucket holding one real point and
10,000 synthetic files points (20 hosts, an hour apart, written through the repository API as
``backup`` writes a point object), a server started over it; ``GET /`` and ``GET /points``
(signed in), median and worst of 10 after a first request (the first after start reads every
point object once and is shown apart).

Result checks (exit 1): every command exits 0; each scenario's server lists exactly 2N points;
in the 1-agent scenario the agent's point is restored through the server and compared with its
trees. Targets (issue #15), PASS/MISS: throughput grows with agents until the store or the CPU
saturates (each doubling gains >= 10 %, or the machine's CPU was >= 90 % busy at the smaller
count); through the server >= restic direct to S3 (aggregate MB/s, at every count); a dashboard
page < 300 ms at 10,000 points.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from harness import cli
from harness.checks import CHECK_ALIGN, CHECK_HEADER, Check, Failures, check_rows
from harness.dataset import ensure_dataset
from harness.environment import head_markdown, head_text, machine
from harness.report import finish
from harness.sampler import SystemSampler
from harness.services import Gateway, Postgres, cpu_seconds, peak_rss_kib, reset_peak
from harness.spawn import Measurement, Spawned, children, log, run_measured, tail, version
from harness.stats import Spread, run_rounds
from harness.strongroom import FAST_KDF, PASSWORD, strongroom_cmd, summary_json
from harness.tables import table_for
from harness.verify import compare_trees, find_restored_root
from harness.workspace import MIB, fresh_dir, prepare, warm

AGENTS = (1, 2, 4, 8)
SHARED_SHARE = 0.25
PAGE_TARGET_MS = 300.0
GROWTH = 1.10  # a doubling of agents must gain this much, unless the CPU was saturated
SATURATED = 90.0  # % of the machine's CPU busy
HOSTS = 20


@dataclass
class Round:
    """One tool, N agents, one round: the first backups and the no-change ones."""

    tool: str
    agents: int
    run: int
    seconds: float = 0.0
    second_seconds: float = 0.0
    source_bytes: int = 0
    agents_cpu: float = 0.0
    agents_rss_kib: int = 0
    server_cpu: float = 0.0
    server_rss_kib: int = 0
    second_server_cpu: float = 0.0
    cpu_busy_pct: float = 0.0
    traffic: dict[str, int] = field(default_factory=dict)
    second_traffic: dict[str, int] = field(default_factory=dict)  # the no-change round's
    ok: bool = True


@dataclass
class Context:
    work: Path
    logs: Path
    gateway: Gateway
    pg: Postgres
    trees: list[Path]  # per agent: its own tree
    shared: Path
    tree_bytes: list[int]  # own + shared, per agent
    failures: Failures
    sampler: SystemSampler
    two_servers: bool
    first_only: bool

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        return {**os.environ, **self.gateway.env, "STRONGROOM_KDF": FAST_KDF, **extra}


# --------------------------------------------------------------------------- the server


class Server:
    """``strongroom server`` through the launcher; its process id for /proc figures."""

    def __init__(self, ctx: Context, env: dict[str, str], stem: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.stem = stem
        cmd = [*strongroom_cmd(), "server", "--listen", f"127.0.0.1:{port}", "--no-scheduler"]
        self.spawned = Spawned(cmd, env, ctx.work, stem)
        try:
            self._wait()
        except BaseException:
            self.spawned.signal(9)  # a server that never answered is not left behind
            self.spawned.finish(timeout=30)
            raise
        self.pid = children(self.spawned.proc.pid)[0]

    def _wait(self) -> None:
        deadline = time.monotonic() + 900  # a start lists the points (10,000 on S3: minutes)
        while True:
            if not self.spawned.running:
                raise RuntimeError(f"the server stopped: {tail(self.stem.with_suffix('.err'))}")
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer in 900 s")
            time.sleep(0.1)

    def admin(self, password: str) -> httpx.Client:
        http = httpx.Client(base_url=self.base, timeout=900)
        signed = http.post("/api/v1/session", json={"name": "admin", "password": password})
        signed.raise_for_status()
        http.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
        return http

    def stop(self) -> Measurement:
        self.spawned.signal(15)
        return self.spawned.finish(timeout=60)


def admin_password(stem: Path) -> str:
    for line in stem.with_suffix(".out").read_text().splitlines():
        if "shown only now" in line:
            return line.split()[-1]
    raise RuntimeError("the server printed no administrator password")


def start_servers(ctx: Context, env: dict[str, str], name: str, count: int) -> list[Server]:
    first = Server(ctx, env, ctx.logs / f"{name}-server1")
    servers = [first]
    if count > 1:  # after the first made the administrator
        servers.append(Server(ctx, env, ctx.logs / f"{name}-server2"))
    return servers


# --------------------------------------------------------------------------- strongroom


def strongroom_round(ctx: Context, n: int, run: int, other_src: str | None = None) -> Round:
    """One scenario with `n` agents; `other_src`: the server and agents of
    another checkout's `src` folder (its PYTHONPATH), `--before`."""
    tool = "before" if other_src else "strongroom"
    result = Round(tool, n, run, source_bytes=sum(ctx.tree_bytes[:n]))
    name = f"{'sb' if other_src else 'sr'}-{run}-{n}"
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    catalog = ctx.pg.database(f"b{uuid.uuid4().hex[:12]}")
    code = {"PYTHONPATH": other_src} if other_src else {}
    env = ctx.env(
        {
            "STRONGROOM_REPO": f"s3:{ctx.gateway.endpoint}/{bucket}/repo",
            "STRONGROOM_PASSWORD": PASSWORD,
            "STRONGROOM_CATALOG": catalog,
            **code,
        }
    )
    agent_env = {
        k: v
        for k, v in ctx.env(code).items()
        if not k.startswith("AWS_") and not k.startswith("STRONGROOM_REPO")
    }
    agent_env.pop("STRONGROOM_PASSWORD", None)
    init = run_measured([*strongroom_cmd(), "init"], env, ctx.work, ctx.logs / f"{name}-init")
    if init.exit_code:
        ctx.failures.fail(f"{name}: init failed")
        result.ok = False
        return result
    servers = start_servers(ctx, env, name, 2 if ctx.two_servers and n >= 8 else 1)
    try:
        admin = servers[0].admin(admin_password(servers[0].stem))
        folder = fresh_dir(ctx.work / "agents")
        configs = enroll(ctx, admin, servers, n, folder, agent_env, name)
        # each agent its own tree cache (XDG_CACHE_HOME), as each restic agent its cache
        caches = [fresh_dir(ctx.work / "agent-cache" / f"agent{i}") for i in range(n)]
        for label, second in (("first", False), ("second", True))[: 1 if ctx.first_only else 2]:
            warm([*ctx.trees[:n], ctx.shared])
            before = [cpu_seconds(s.pid) for s in servers]
            for s in servers:
                reset_peak(s.pid)
            began = time.time()
            spawned = [
                Spawned(
                    [
                        *strongroom_cmd(),
                        "--json",
                        "backup",
                        str(ctx.trees[i]),
                        str(ctx.shared),
                        "--agent-config",
                        str(configs[i]),
                    ],
                    {**agent_env, "XDG_CACHE_HOME": str(caches[i])},
                    ctx.work,
                    ctx.logs / f"{name}-{label}-agent{i}",
                )
                for i in range(n)
            ]
            done = [s.finish(timeout=3600) for s in spawned]
            seconds = time.time() - began
            server_cpu = sum(cpu_seconds(s.pid) - b for s, b in zip(servers, before, strict=True))
            for i, m in enumerate(done):
                if m.exit_code:
                    ctx.failures.fail(f"{name} {label} agent{i}: exit {m.exit_code}")
                    result.ok = False
            if second:
                result.second_seconds, result.second_server_cpu = seconds, server_cpu
                result.second_traffic = negotiation(ctx, name, n, label)
                continue
            result.seconds, result.server_cpu = seconds, server_cpu
            result.server_rss_kib = max(peak_rss_kib(s.pid) for s in servers)
            result.agents_cpu = sum(m.cpu_seconds for m in done)
            result.agents_rss_kib = max(m.peak_rss_kib for m in done)
            result.cpu_busy_pct = ctx.sampler.window(began, time.time()).get("cpu_busy_pct", 0)
            result.traffic = negotiation(ctx, name, n, label)
        points = admin.get("/api/v1/points").json()
        if len(points) != (1 if ctx.first_only else 2) * n:
            ctx.failures.fail(f"{name}: the server lists {len(points)} points")
            result.ok = False
        if n == 1 and result.ok and not ctx.first_only:
            verify_restore(ctx, {**agent_env, "XDG_CACHE_HOME": str(caches[0])}, configs[0], name)
    finally:
        for s in servers:
            s.stop()
        ctx.gateway.purge(bucket)
    log(
        f"  {tool:10} {n} agent(s): {result.seconds:.1f} s "
        f"({result.source_bytes / 1e6 / result.seconds:.1f} MB/s), no change "
        f"{result.second_seconds:.1f} s ({result.second_traffic.get('requests', 0)} requests, "
        f"{result.second_traffic.get('chunks_read', 0)} chunks read); "
        f"server {result.server_cpu:.1f} s CPU, "
        f"{result.server_rss_kib / 1024:.0f} MiB"
    )
    return result


def enroll(
    ctx: Context,
    admin: httpx.Client,
    servers: list[Server],
    n: int,
    folder: Path,
    env: dict[str, str],
    name: str,
) -> list[Path]:
    configs = []
    procs = []
    for i in range(n):
        order = [s.base for s in servers]
        if i % 2:
            order.reverse()  # with two servers, half the agents name the second first
        token = admin.post("/api/v1/enrollments", json={"machine": f"agent{i}"}).json()["token"]
        configs.append(folder / f"agent{i}.json")
        procs.append(
            subprocess.Popen(
                [
                    *strongroom_cmd(),
                    "agent",
                    "enroll",
                    "--server",
                    ",".join(order),
                    "--token",
                    token,
                    "--config",
                    str(configs[-1]),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    for i, proc in enumerate(procs):
        _out, err = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError(f"{name}: enrolling agent{i} failed: {err.decode().strip()}")
    return configs


def negotiation(ctx: Context, name: str, n: int, label: str = "first") -> dict[str, int]:
    """The agents' ``traffic`` summed (remote/store.py's counters) in round `label`."""
    total: dict[str, int] = {}
    for i in range(n):
        doc = summary_json(ctx.logs / f"{name}-{label}-agent{i}")
        for key, value in (doc.get("traffic") or {}).items():
            total[key] = total.get(key, 0) + int(value)
    return total


def verify_restore(ctx: Context, env: dict[str, str], config: Path, name: str) -> None:
    target = fresh_dir(ctx.work / "restore")
    m = run_measured(
        [
            *strongroom_cmd(),
            "restore",
            "latest",
            "--target",
            str(target),
            "--agent-config",
            str(config),
        ],
        env,
        ctx.work,
        ctx.logs / f"{name}-restore",
    )
    if m.exit_code:
        ctx.failures.fail(f"{name}: restore through the server failed")
        return
    for tree in (ctx.trees[0], ctx.shared):
        restored = find_restored_root(target, tree)
        problems = ["not found"] if restored is None else compare_trees(tree, restored)[0]
        if problems:
            ctx.failures.fail(f"{name}: {tree.name} restored differs: {problems[:3]}")
    log(f"  {name}: restore through the server verified ({m.seconds:.1f} s)")


# --------------------------------------------------------------------------- restic


def restic_round(ctx: Context, n: int, run: int) -> Round:
    result = Round("restic", n, run, source_bytes=sum(ctx.tree_bytes[:n]))
    name = f"restic-{run}-{n}"
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    repo = f"s3:{ctx.gateway.endpoint}/{bucket}"
    env = ctx.env({"RESTIC_PASSWORD": PASSWORD})
    init = run_measured(["restic", "-r", repo, "init"], env, ctx.work, ctx.logs / f"{name}-init")
    if init.exit_code:
        ctx.failures.fail(f"{name}: init failed: {tail(ctx.logs / f'{name}-init.err', 3)}")
        result.ok = False
        return result
    caches = [fresh_dir(ctx.work / "restic-cache" / f"agent{i}") for i in range(n)]
    try:
        for label in ("first", "second")[: 1 if ctx.first_only else 2]:
            warm([*ctx.trees[:n], ctx.shared])
            began = time.time()
            spawned = [
                Spawned(
                    [
                        "restic",
                        "-r",
                        repo,
                        "backup",
                        "--host",
                        f"agent{i}",
                        str(ctx.trees[i]),
                        str(ctx.shared),
                    ],
                    {**env, "RESTIC_CACHE_DIR": str(caches[i])},
                    ctx.work,
                    ctx.logs / f"{name}-{label}-agent{i}",
                )
                for i in range(n)
            ]
            done = [s.finish(timeout=3600) for s in spawned]
            seconds = time.time() - began
            for i, m in enumerate(done):
                if m.exit_code:
                    ctx.failures.fail(f"{name} {label} agent{i}: exit {m.exit_code}")
                    result.ok = False
            if label == "second":
                result.second_seconds = seconds
                continue
            result.seconds = seconds
            result.agents_cpu = sum(m.cpu_seconds for m in done)
            result.agents_rss_kib = max(m.peak_rss_kib for m in done)
            result.cpu_busy_pct = ctx.sampler.window(began, time.time()).get("cpu_busy_pct", 0)
    finally:
        ctx.gateway.purge(bucket)
    log(
        f"  restic     {n} agent(s): {result.seconds:.1f} s "
        f"({result.source_bytes / 1e6 / result.seconds:.1f} MB/s), no change "
        f"{result.second_seconds:.1f} s"
    )
    return result


# --------------------------------------------------------------------------- the dashboard


def write_points(location: str, count: int, tree: str) -> None:
    """``count`` synthetic files points, written as ``backup`` writes a point object."""
    from strongroom.model.point import RecoveryPoint
    from strongroom.services.session import LockMode, open_repository

    start = datetime.now(UTC) - timedelta(hours=count // HOSTS + 1)
    with open_repository(location, PASSWORD.encode(), lock=LockMode.NONE) as repo:

        def one(i: int) -> None:
            host = f"host{i % HOSTS:02d}"
            point = RecoveryPoint(
                kind="files",
                time=start + timedelta(hours=i // HOSTS),
                host=host,
                user="bench",
                paths=[f"/srv/{host}"],
                tree=tree,
                summary={"total_bytes": 10**9 + i, "data_added": 10**6},
            )
            repo.save_point(point.to_doc())

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(count)))


def dashboard(ctx: Context, count: int) -> dict[str, Any]:
    name = "dashboard"
    bucket = f"dash-{uuid.uuid4().hex[:8]}"
    location = f"s3:{ctx.gateway.endpoint}/{bucket}/repo"
    env = ctx.env(
        {
            "STRONGROOM_REPO": location,
            "STRONGROOM_PASSWORD": PASSWORD,
            "STRONGROOM_CATALOG": ctx.pg.database(f"d{uuid.uuid4().hex[:12]}"),
        }
    )
    os.environ.update(ctx.gateway.env)  # for the in-process writes
    out: dict[str, Any] = {"points": count}
    try:
        run_measured([*strongroom_cmd(), "init"], env, ctx.work, ctx.logs / f"{name}-init")
        small = fresh_dir(ctx.work / "dash-tree")
        (small / "hello.txt").write_text("one real point\n")
        stem = ctx.logs / f"{name}-backup"
        run_measured([*strongroom_cmd(), "--json", "backup", str(small)], env, ctx.work, stem)
        real = summary_json(stem).get("point_id")
        tree = json.loads(
            subprocess.run(
                [*strongroom_cmd(), "--json", "snapshots"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )[0]["tree"]
        began = time.perf_counter()
        write_points(location, count - 1, tree)
        out["write_seconds"] = time.perf_counter() - began
        log(f"  {count - 1} point objects written in {out['write_seconds']:.1f} s ({real})")
        began = time.perf_counter()
        server = Server(ctx, env, ctx.logs / f"{name}-server")
        out["server_start_seconds"] = time.perf_counter() - began
        try:
            http = server.admin(admin_password(server.stem))
            pages = {}
            for url in ("/", "/points", "/points?page=50", "/api/v1/points"):
                t0 = time.perf_counter()
                first = http.get(url)
                first_ms = (time.perf_counter() - t0) * 1000
                times = []
                for _ in range(10):
                    t0 = time.perf_counter()
                    answer = http.get(url)
                    times.append((time.perf_counter() - t0) * 1000)
                    if answer.status_code != 200:
                        ctx.failures.fail(f"dashboard {url}: {answer.status_code}")
                pages[url] = {
                    "first_ms": first_ms,
                    "median_ms": statistics.median(times),
                    "worst_ms": max(times),
                    "bytes": len(first.content),
                }
                log(f"  {url}: first {first_ms:.0f} ms, median {pages[url]['median_ms']:.0f} ms")
            listed = len(http.get("/api/v1/points").json())
            if listed != count:
                ctx.failures.fail(f"dashboard: {listed} points listed, not {count}")
            out["pages"] = pages
        finally:
            server.stop()
        # A restart: the catalog remembers the documents read (point_memos),
        # so the first page costs one listing and one query.
        began = time.perf_counter()
        again = Server(ctx, env, ctx.logs / f"{name}-restart")
        try:
            http = again.admin(admin_password(server.stem))
            answer = http.get("/")
            out["restart_first_page_s"] = time.perf_counter() - began
            if answer.status_code != 200:
                ctx.failures.fail(f"dashboard / after a restart: {answer.status_code}")
            log(f"  restart to first page: {out['restart_first_page_s']:.1f} s")
        finally:
            again.stop()
    finally:
        ctx.gateway.purge(bucket)
    return out


# --------------------------------------------------------------------------- report


def medians(rounds: list[Round]) -> dict[tuple[str, int], dict[str, Any]]:
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for key in dict.fromkeys((r.tool, r.agents) for r in rounds):
        mine = [r for r in rounds if (r.tool, r.agents) == key and r.ok and r.seconds]
        if not mine:
            continue
        spread = Spread.of(r.seconds for r in mine)
        med = {
            f: statistics.median(getattr(r, f) for r in mine)
            for f in (
                "second_seconds",
                "agents_cpu",
                "agents_rss_kib",
                "server_cpu",
                "server_rss_kib",
                "second_server_cpu",
                "cpu_busy_pct",
            )
        }
        traffic = {k: statistics.median(r.traffic.get(k, 0) for r in mine) for k in mine[0].traffic}
        second_traffic = {
            k: statistics.median(r.second_traffic.get(k, 0) for r in mine)
            for k in mine[0].second_traffic
        }
        source = mine[0].source_bytes
        found[key] = {
            "seconds": spread,
            "mb_s": source / 1e6 / spread.median,
            "source_bytes": source,
            "traffic": traffic,
            "second_traffic": second_traffic,
            **med,
        }
    return found


def checks_for(m: dict[tuple[str, int], dict[str, Any]], dash: dict[str, Any]) -> list[Check]:
    checks = []
    counts = sorted(n for tool, n in m if tool == "strongroom")
    for small, big in itertools.pairwise(counts):
        a, b = m[("strongroom", small)], m[("strongroom", big)]
        gain = b["mb_s"] / a["mb_s"]
        saturated = a["cpu_busy_pct"] >= SATURATED
        checks.append(
            Check(
                f"throughput {big} vs {small} agents (CPU {a['cpu_busy_pct']:.0f} % "
                f"busy at {small})",
                gain,
                "x",
                f">= {GROWTH:g}x or CPU saturated",
                gain >= GROWTH or saturated,
            )
        )
    for n in counts:
        peer = m.get(("restic", n))
        value = m[("strongroom", n)]["mb_s"] / peer["mb_s"] if peer else None
        checks.append(
            Check(
                f"{n} agent(s): through the server / restic direct",
                value,
                "x",
                ">= 1x",
                None if value is None else value >= 1.0,
            )
        )
    for url in ("/", "/points"):
        page = dash.get("pages", {}).get(url)
        value = page["median_ms"] if page else None
        checks.append(
            Check(
                f"dashboard {url} at {dash.get('points', 0):,} points (median)",
                value,
                "ms",
                f"< {PAGE_TARGET_MS:g} ms",
                None if value is None else value < PAGE_TARGET_MS,
            )
        )
    return checks


def report(
    env: dict[str, object],
    args: argparse.Namespace,
    per_agent: int,
    m: dict[tuple[str, int], dict[str, Any]],
    dash: dict[str, Any],
    checks: list[Check],
) -> str:
    table = table_for(args.markdown)
    counts = sorted({n for _, n in m})
    lines = [head_markdown(env)] if args.markdown else head_text(env)
    lines += [
        "",
        f"Per agent: {per_agent / MIB:.0f} MiB ({100 - SHARED_SHARE * 100:.0f} % its own data "
        f"set, {SHARED_SHARE * 100:.0f} % shared by all agents); median of {args.runs} round(s); "
        "MB/s = 10^6 bytes of source data per second, all agents together; warm page cache.",
        "",
    ]
    rows = []
    for n in counts:
        sr, rs = m.get(("strongroom", n)), m.get(("restic", n))
        rows.append(
            [
                str(n),
                sr["seconds"].text(1) if sr else "-",
                f"{sr['mb_s']:.1f}" if sr else "-",
                rs["seconds"].text(1) if rs else "-",
                f"{rs['mb_s']:.1f}" if rs else "-",
                f"{sr['mb_s'] / rs['mb_s']:.2f}x" if sr and rs else "n/a",
                f"{sr['server_cpu']:.1f}" if sr else "-",
                f"{sr['server_rss_kib'] / 1024:.0f}" if sr else "-",
                f"{sr['agents_cpu']:.1f}" if sr else "-",
                f"{rs['agents_cpu']:.1f}" if rs else "-",
                f"{sr['cpu_busy_pct']:.0f}" if sr else "-",
            ]
        )
    header = [
        "agents",
        "strongroom s",
        "MB/s",
        "restic s",
        "MB/s",
        "ratio",
        "server CPU s",
        "server RSS MiB",
        "agents CPU s",
        "restic CPU s",
        "CPU busy %",
    ]
    lines += [table(header, rows, "r" * len(header)), ""]
    rows = []
    for n in counts if not args.first_only else ():
        sr, rs = m.get(("strongroom", n)), m.get(("restic", n))
        rows.append(
            [
                str(n),
                f"{sr['second_seconds']:.1f}" if sr else "-",
                f"{sr['second_server_cpu']:.1f}" if sr else "-",
                f"{sr['second_traffic'].get('requests', 0):.0f}" if sr else "-",
                f"{sr['second_traffic'].get('chunks_read', 0):.0f}" if sr else "-",
                f"{sr['second_traffic'].get('trees_cached', 0):.0f}" if sr else "-",
                f"{rs['second_seconds']:.1f}" if rs else "-",
                f"{rs['second_seconds'] / sr['second_seconds']:.2f}x" if sr and rs else "n/a",
            ]
        )
    header = [
        "agents",
        "no-change round: strongroom s",
        "server CPU s",
        "requests",
        "chunks read",
        "trees from cache",
        "restic s",
        "strongroom speed / restic",
    ]
    lines += [table(header, rows, "r" * len(header)), ""] if rows else []
    lines += before_table(args, m, counts)
    rows = []
    for n in counts:
        sr = m.get(("strongroom", n))
        if not sr or not sr["traffic"]:
            continue
        t, gb = sr["traffic"], sr["source_bytes"] / 1e9
        talk = t.get("question_bytes", 0) + t.get("answer_bytes", 0)
        rows.append(
            [
                str(n),
                f"{t.get('asked', 0):.0f}",
                f"{t.get('missing', 0):.0f}",
                f"{t.get('questions', 0):.0f}",
                f"{talk / 1e3:.0f}",
                f"{t.get('questions', 0) / gb:.1f}",
                f"{talk / 1e3 / gb:.0f}",
                f"{t.get('requests', 0) / gb:.0f}",
                f"{t.get('bytes_sent', 0) / 1e6:.1f}",
            ]
        )
    header = [
        "agents",
        "ids asked",
        "missing",
        "round trips",
        "KB asked+answered",
        "round trips / GB",
        "KB / GB",
        "all requests / GB",
        "MB uploaded",
    ]
    lines += [table(header, rows, "r" * len(header)), ""]
    if dash.get("pages"):
        rows = [
            [
                f"`{url}`" if args.markdown else url,
                f"{p['first_ms']:.0f}",
                f"{p['median_ms']:.0f}",
                f"{p['worst_ms']:.0f}",
                f"{p['bytes'] / 1024:.0f}",
            ]
            for url, p in dash["pages"].items()
        ]
        header = [
            f"page at {dash['points']:,} points",
            "first after start ms",
            "median ms",
            "worst ms",
            "KiB",
        ]
        lines += [table(header, rows, "lrrrr"), ""]
        if "restart_first_page_s" in dash:
            lines += [
                f"Server restart to its first page (documents from the catalog): "
                f"{dash['restart_first_page_s']:.1f} s; the first start (every point read "
                f"from storage): {dash.get('server_start_seconds', 0):.1f} s to answer, the "
                f"first `/` {dash['pages']['/']['first_ms'] / 1000:.1f} s.",
                "",
            ]
    lines += [table(CHECK_HEADER, check_rows(checks), CHECK_ALIGN)]
    return "\n".join(lines).replace("FAIL", "MISS")


def before_table(
    args: argparse.Namespace, m: dict[tuple[str, int], dict[str, Any]], counts: list[int]
) -> list[str]:
    """`--before`: the other checkout against this one and restic, same rounds."""
    rows = []
    for n in counts:
        sb, sr, rs = m.get(("before", n)), m.get(("strongroom", n)), m.get(("restic", n))
        if not sb:
            continue
        second = not args.first_only
        rows.append(
            [
                str(n),
                sb["seconds"].text(1),
                sr["seconds"].text(1) if sr else "-",
                f"{sr['mb_s'] / sb['mb_s']:.2f}x" if sr else "n/a",
                f"{sb['mb_s'] / rs['mb_s']:.2f}x" if rs else "n/a",
                f"{sb['agents_cpu']:.1f}",
                f"{sr['agents_cpu']:.1f}" if sr else "-",
                f"{sb['second_seconds']:.1f}" if second else "-",
                f"{sr['second_seconds']:.1f}" if sr and second else "-",
            ]
        )
    header = [
        "agents",
        "before s",
        "after s",
        "after / before speed",
        "before / restic",
        "before agents CPU s",
        "after agents CPU s",
        "no-change before s",
        "after s",
    ]
    return [table_for(args.markdown)(header, rows, "r" * len(header)), ""] if rows else []


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="64 MiB per agent (default 512 MiB)")
    p.add_argument("--size", type=int, default=512, help="MiB per agent (default 512)")
    p.add_argument("--agents", default=",".join(map(str, AGENTS)), help="agent counts (1,2,4,8)")
    p.add_argument("--tools", default="strongroom,restic", help="strongroom,restic")
    p.add_argument("--two-servers", action="store_true", help="two server processes at 8 agents")
    p.add_argument(
        "--first-only",
        action="store_true",
        help="first backups only: no no-change round and no restore check",
    )
    p.add_argument("--points", type=int, default=10_000, help="dashboard points (0: skip)")
    p.add_argument(
        "--before",
        metavar="SRC",
        help="also run the server and agents of another checkout's src folder, each round",
    )
    cli.add_common(p, keep_help="keep the run folder", runs=True)
    args = p.parse_args(argv)
    if args.quick:
        args.size = 64
    args.agents = sorted({int(x) for x in args.agents.split(",") if x.strip()})
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not args.agents or min(args.agents) < 1 or not set(args.tools) <= {"strongroom", "restic"}:
        p.error("--agents: counts >= 1; --tools: strongroom, restic")
    cli.check_runs(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the gateway and PostgreSQL stop
    most = max(args.agents)
    per_agent = args.size * MIB
    work = prepare(args.workdir, "server", 3 * most * per_agent, "trees, restores")
    logs = fresh_dir(work / "logs")
    own = int(per_agent * (1 - SHARED_SHARE))
    trees = [work / "cache" / f"own{i}" for i in range(most)]
    infos = [ensure_dataset(t, own, args.seed + 1 + i) for i, t in enumerate(trees)]
    shared = ensure_dataset(work / "cache" / "shared", per_agent - own, args.seed)
    env = machine(
        work,
        {
            "strongroom": version([*strongroom_cmd(), "--version"]),
            "restic": version(["restic", "version"]),
        },
    )
    failures = Failures()
    log("starting the RADOS gateway and PostgreSQL ...")
    gateway = Gateway(work / "rgw")
    pg: Postgres | None = None
    sampler = SystemSampler()
    rounds: list[Round] = []
    dash: dict[str, Any] = {}
    try:
        pg = Postgres(work / "pg")
        ctx = Context(
            work,
            logs,
            gateway,
            pg,
            [t for t in trees],
            work / "cache" / "shared",
            [i.bytes + shared.bytes for i in infos],
            failures,
            sampler,
            args.two_servers,
            args.first_only,
        )

        def one(run: int) -> list[Round]:
            found = []
            for n in args.agents:
                if "strongroom" in args.tools:
                    found.append(strongroom_round(ctx, n, run))
                if args.before:
                    found.append(strongroom_round(ctx, n, run, args.before))
                if "restic" in args.tools:
                    found.append(restic_round(ctx, n, run))
            return found

        rounds = [r for rs in run_rounds(args.runs, one, args.warmup) for r in rs]
        if args.points:
            dash = dashboard(ctx, args.points)
    except (RuntimeError, subprocess.CalledProcessError, httpx.HTTPError) as err:
        failures.fail(str(err))
    finally:
        sampler.stop()
        if pg is not None:
            pg.close()
        gateway.close()
    m = medians(rounds)
    checks = checks_for(m, dash)
    text = report(env, args, per_agent, m, dash, checks)
    doc = {
        "environment": env,
        "per_agent_bytes": per_agent,
        "rounds": [asdict(r) for r in rounds],
        "median": {f"{t}-{n}": v for (t, n), v in m.items()},
        "dashboard": dash,
        "checks": [asdict(c) for c in checks],
        "failures": failures.items,
    }
    return finish(text + "\n".join(failures.text_lines()), doc, args.json, logs, failures)


if __name__ == "__main__":
    sys.exit(main())
