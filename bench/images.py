#!/usr/bin/env python3
"""Block image benchmark: strongroom's image backup, restore and serve against qemu-img convert.

What is measured (issue #3, "Block images with changed-block tracking", Performance)
-----------------------------------------------------------------------------------
One sparse-ish qcow2 image (default: 8 GiB virtual, 3 GiB of realistic data), on the same disk
as the repository, one run:

1. ``reference``: ``qemu-img convert -O raw disk.qcow2 ref.raw``, default options, as a user
   would type it: the read limit of this disk and this image format.
2. ``full``: ``strongroom backup --image disk.qcow2`` into a fresh repository (``init`` is not
   timed). strongroom also starts its own persistent dirty bitmap in the image.
3. ``bitmap``: 1 % of the disk's 1 MiB blocks rewritten at random (through a writable
   ``qemu-nbd``, so the image's persistent bitmap records the writes), then the same command:
   the incremental through strongroom's dirty bitmap (``tracker`` must be ``bitmap``).
4. ``compare``: another 1 % rewritten, then ``--changed-since compare``: the incremental by
   reading every block and comparing it with the parent point.
5. ``restore``: ``strongroom restore latest --target out.raw``; then (not timed)
   ``qemu-img compare`` against the image: a difference is a failure.
6. ``serve``: ``strongroom serve latest --socket S``, then two clients, one server each:
   ``nbdcopy URI null:`` (sequential read of the whole export) and
   ``qemu-img convert -O raw URI serve.raw`` (checked against the image with
   ``qemu-img compare``).

MB/s is 10^6 *data bytes* per second: the bytes the image actually holds (qcow2 clusters
allocated as data, from ``qemu-img map``), in every phase so that phases compare. The virtual
size would flatter everything that skips holes (qemu-img, strongroom, nbdcopy all do), so it is
shown alongside but targets are judged on data bytes.

Why it is done this way
-----------------------
* The harness's conventions (``bench/harness/``): every timed command runs through its launcher
  (wall time, peak RSS of the tool itself, CPU time); the page cache is warm (the image, the
  repository and strongroom's cache are read, then ``sync``, before each command); progress on
  stderr, the report on stdout; each command's output in ``WORKDIR/images/logs/``.
* The image (``harness/disk_image.py``) is generated once per seed and sizes into
  ``WORKDIR/images/cache/`` (a sparse raw
  file of extents of 1-64 MiB at random 64 KiB-aligned offsets: ~45 % text/code-like data,
  ~35 % incompressible data, ~10 % copies of earlier extents (same offset within a 1 MiB
  block, so whole blocks deduplicate), ~10 % short zero runs inside the data), converted to
  qcow2, and copied fresh into the run directory each run (backups add bitmaps to it).
* The rewrites are deterministic by seed: ~85 % of the blocks chosen hold data, the rest are
  holes; half the blocks are rewritten whole, half in a 64 KiB-aligned part.
* The server's peak RSS and CPU are those of ``strongroom serve`` over the whole session
  (start, one client's read, SIGTERM); the client's own figures are in the notes.
* The key file uses a lowered KDF (``STRONGROOM_KDF=1,8192,1``; ``--default-kdf`` for the
  default, which adds about 0.3 s to every command): the benchmark measures data paths.

Peers (issue #16): ``restic backup`` and ``borg create`` of the same image file, with their
defaults, into their own repositories: a first backup right after strongroom's full, and a
second one right after strongroom's bitmap incremental (the same file state; they read the
whole file again and deduplicate). ``--peers none`` skips them.

The bitmap incremental's fixed cost is split from its point's summary (``parent_seconds``,
``store_seconds``, ``seconds``) and its wall time: start-up with the repository's opening,
the parent with the chunk index and its map, the source with its bitmap tracker (opening it,
retiring the superseded bitmap), the work (``store_seconds``: reading and storing).

Targets (issue #16): full backup <= 2.5x the ``qemu-img convert`` time and >= 2x faster than
restic's and borg's first backups; bitmap incremental >= 20x faster than the full backup and
than both peers' second backups; restore <= 1.5x the ``qemu-img convert`` time; ``serve`` (nbdcopy)
>= 300 MB/s of data bytes.

Usage::

    nice -n 10 python bench/images.py [--size 8] [--data 3] [--quick] [--runs 1] [--warmup 0]
                                      [--seed N] [--workdir DIR] [--keep] [--json FILE]
                                      [--markdown] [--default-kdf] [--peers restic,borg]
                                      [--no-install]

With ``--runs N`` each phase shows the run with the median time, median RSS and CPU, and the
range of the wall times in its notes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness import cli
from harness.checks import CHECK_ALIGN, CHECK_HEADER, Check, Failures, check_rows, info, ratio_check
from harness.dataset import TextSource
from harness.disk_image import (
    BLOCK,
    QUICK,
    UNIT,
    ImageMeta,
    allocated_bytes,
    data_bytes,
    data_extents,
    describe_image,
    ensure_image,
    image_cache,
    sizes,
)
from harness.environment import head_markdown, head_text, machine
from harness.peers import Borg, Restic, Space, Tool, available, tool_env
from harness.phases import (
    MBPS_NOTE,
    PHASE_ALIGN,
    PHASE_HEADER,
    PhaseResult,
    RunDir,
    median_results,
    phase_rows,
)
from harness.report import finish
from harness.spawn import Spawned, log, run_measured, tail, version
from harness.stats import mb, run_rounds
from harness.strongroom import FAST_KDF, strongroom_cmd, summary_json
from harness.tables import Table, md_table, plain_table, sentences
from harness.workspace import GIB, copy_file, fsync_seconds, prepare, require, tree_bytes

REWRITE_SHARE = 0.01
REWRITE_HOLES = 0.15  # share of the rewritten blocks chosen among holes

PHASES = (
    "reference",
    "full",
    "restic_full",
    "borg_full",
    "bitmap",
    "restic_incr",
    "borg_incr",
    "compare",
    "restore",
    "serve_nbdcopy",
    "serve_convert",
)
PEERS = ("restic", "borg")
LABELS = {
    "reference": "qemu-img convert (reference)",
    "full": "full backup",
    "restic_full": "restic: first backup",
    "borg_full": "borg: first backup",
    "bitmap": "1% incremental, bitmap",
    "restic_incr": "restic: after the 1% rewrite",
    "borg_incr": "borg: after the 1% rewrite",
    "compare": "1% incremental, compare",
    "restore": "restore to raw",
    "serve_nbdcopy": "serve: nbdcopy -> null",
    "serve_convert": "serve: qemu-img convert",
}


# --------------------------------------------------------------------------- the rewrites


@dataclass
class Rewrite:
    round: int
    blocks: int = 0
    data_blocks: int = 0
    hole_blocks: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    block_list: list[int] = field(default_factory=list)


def choose_rewrites(
    path: Path, size: int, seed: int, round_: int, exclude: set[int]
) -> list[tuple[int, int, int, bool]]:
    """(block, offset, length, had data) of the writes of one round: 1 % of the disk's blocks,
    ~85 % of them among blocks holding data, the rest among holes."""
    rng = random.Random(f"images:{seed}:rewrite:{round_}")
    blocks = -(-size // BLOCK)
    with_data: set[int] = set()
    for offset, length in data_extents(path):
        with_data.update(range(offset // BLOCK, -(-(offset + length) // BLOCK)))
    count = max(1, round(blocks * REWRITE_SHARE))
    holes = round(count * REWRITE_HOLES)
    data_pool = sorted(with_data - exclude)
    hole_pool = sorted(set(range(blocks)) - with_data - exclude)
    chosen = rng.sample(data_pool, min(len(data_pool), count - holes))
    chosen += rng.sample(hole_pool, min(len(hole_pool), count - len(chosen)))
    writes = []
    for block in sorted(chosen):
        base, room = block * BLOCK, min(BLOCK, size - block * BLOCK)
        if rng.random() < 0.5 or room <= UNIT:
            start, length = 0, room  # the whole block
        else:
            start = rng.randrange(room // UNIT) * UNIT
            length = rng.randint(1, (room - start) // UNIT) * UNIT
        writes.append((block, base + start, length, block in with_data))
    return writes


def _start_qemu_nbd(path: Path, sock: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["qemu-nbd", "-f", "qcow2", "-k", str(sock), str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def rewrite(path: Path, size: int, seed: int, round_: int, exclude: set[int]) -> Rewrite:
    """Rewrite 1 % of the blocks through a writable qemu-nbd, so the image's persistent dirty
    bitmaps record the writes as they would for a VM; deterministic by seed and round.
    Half the new data is text-like, half random."""
    from strongroom.nbd.client import NbdClient, NbdError

    writes = choose_rewrites(path, size, seed, round_, exclude)
    rng = random.Random(f"images:{seed}:rewrite-data:{round_}")
    text = TextSource(rng, lines=5000)
    payload = [
        (off, text.text(rng, n) if rng.random() < 0.5 else rng.randbytes(n))
        for _, off, n, _ in writes
    ]
    t0 = time.perf_counter()
    sock = path.with_name("rewrite.sock")
    sock.unlink(missing_ok=True)
    server = _start_qemu_nbd(path, sock)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = NbdClient.connect(f"nbd+unix:///?socket={sock}")
                break
            except NbdError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("qemu-nbd did not start") from None
                time.sleep(0.05)
        client.write_many(payload)
        client.flush()
        client.close()
        server.wait(timeout=60)  # qemu-nbd ends with its only client, storing the bitmaps
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        sock.unlink(missing_ok=True)
    if server.returncode != 0:
        err = server.stderr.read().decode(errors="replace") if server.stderr else ""
        raise RuntimeError(f"qemu-nbd exited with {server.returncode}: {err.strip()}")
    had_data = sum(1 for *_, d in writes if d)
    return Rewrite(
        round=round_,
        blocks=len(writes),
        data_blocks=had_data,
        hole_blocks=len(writes) - had_data,
        bytes_written=sum(n for _, _, n, _ in writes),
        seconds=round(time.perf_counter() - t0, 2),
        block_list=[b for b, *_ in writes],
    )


# --------------------------------------------------------------------------- phases


@dataclass
class Context(RunDir):
    """One run: its folder, the seed of the rewrites, its index among the rounds."""

    seed: int = 0
    index: int = 1
    final_data: int = 0
    peers: list[Tool] = field(default_factory=list)


def phase_reference(ctx: Context, data: int) -> None:
    out = ctx.run / "ref.raw"
    cmd = ["qemu-img", "convert", "-O", "raw", str(ctx.image), str(out)]
    r = ctx.measure("reference", cmd, [ctx.image])
    r.data_bytes = data
    if r.ok:
        # qemu-img convert leaves its output in the page cache; strongroom's restore fsyncs.
        # Time the flush separately (not part of the reference) to show what it costs here.
        r.details["fsync_seconds"] = fsync_seconds(out)
        r.details["allocated"] = allocated_bytes(out)
        r.note = (
            f"output {allocated_bytes(out) / 1e6:.0f} MB allocated, not fsynced "
            f"(an fsync after it: {r.details['fsync_seconds']:.2f} s)"
        )
    ctx.report(r)
    if not ctx.keep:
        out.unlink(missing_ok=True)


def phase_backup(ctx: Context, phase: str, data: int, tracker: str, expect: str) -> bool:
    cmd = [*strongroom_cmd(), "backup", "--image", str(ctx.image), "--json"]
    if tracker != "auto":
        cmd += ["--changed-since", tracker]
    r = ctx.measure(phase, cmd, [ctx.image])
    r.data_bytes = data
    r.repo_bytes = tree_bytes(ctx.repo)
    if r.ok:
        s = summary_json(ctx.logs / phase)
        keys = (
            "tracker",
            "tracker_note",
            "blocks",
            "holes",
            "blocks_read",
            "bytes_read",
            "blocks_changed",
            "blocks_new",
            "data_added",
            "data_added_stored",
            "seconds",
        )
        r.details = {k: s.get(k) for k in keys}
        r.note = (
            f"{s.get('tracker')}: read {mb(s.get('bytes_read'))} MB "
            f"({s.get('blocks_read')} blocks), {s.get('blocks_changed')} changed, "
            f"+{mb(s.get('data_added_stored'))} MB stored; repo {r.repo_bytes / 1e6:.0f} MB"
        )
        if s.get("tracker") != expect:  # result check: the tracker the phase is about
            r.ok = False
            why = s.get("tracker_note") or "no note"
            ctx.fail(f"{LABELS[phase]}: tracker {s.get('tracker')!r}, expected {expect!r} ({why})")
    ctx.report(r)
    return r.ok


def _peer_space(ctx: Context, tool: Tool) -> Space:
    return Space(ctx.run / tool.name, ctx.image, ctx.logs)


def phase_peer(ctx: Context, tool: Tool, phase: str, data: int, first: bool) -> None:
    """restic or borg backing up the image file itself, with its defaults: what a user would
    pick instead. ``first``: into a fresh repository (``init`` not timed); else the same
    file again after the rewrite (each reads the whole file and deduplicates)."""
    space = _peer_space(ctx, tool)
    env = tool_env(tool, space)
    if first:
        space.root.mkdir(parents=True, exist_ok=True)
        init = run_measured(tool.init(space), env, space.root, ctx.logs / f"{tool.name}-init")
        if init.exit_code != 0:
            ctx.fail(f"{tool.name} init: exit code {init.exit_code}")
            return
    ctx.warm([ctx.image, space.repo])
    cmd = tool.backup(space, f"{phase}-{ctx.index}")
    m = run_measured(cmd, env, space.root, ctx.logs / phase)
    if m.exit_code in tool.ok_codes:  # borg: 1 is a warning
        m = replace(m, exit_code=0)
    r = ctx.record(phase, m, cmd)
    r.data_bytes = data
    r.repo_bytes = tree_bytes(space.repo)
    r.note = f"repo {r.repo_bytes / 1e6:.0f} MB (the {ctx.image.suffix[1:]} file)"
    ctx.report(r)


def fixed_cost(ctx: Context, phase: str) -> None:
    """The bitmap incremental's fixed cost from its point's summary (not timed): the wall
    time outside the backup service (interpreter start-up, imports, opening the repository,
    recording the point), choosing the parent with the chunk index and its map, opening the
    source with its tracker (bitmaps, qemu-nbd, block status), and the rest (the work)."""
    r = ctx.results.get(phase)
    if r is None or not r.ok:
        return
    cmd = [*strongroom_cmd(), "snapshots", "--json"]
    out = subprocess.run(cmd, env=ctx.env(), capture_output=True, text=True, check=False)
    try:
        summary = json.loads(out.stdout)[-1]["summary"]
        seconds = float(summary["seconds"])
        parent = float(summary["parent_seconds"])
        opened = float(summary["open_seconds"])
        stored = float(summary["store_seconds"])
    except (ValueError, KeyError, IndexError, TypeError):
        return  # a strongroom without the split
    r.details["fixed"] = {
        "startup_open_record": round(r.seconds - seconds - parent, 3),
        "parent_index_map": parent,
        "source_tracker": opened,
        "retire_bitmap": round(seconds - opened - stored, 3),
        "work": stored,
    }


def phase_restore(ctx: Context, data: int) -> None:
    out = ctx.run / "out.raw"
    out.unlink(missing_ok=True)
    cmd = [*strongroom_cmd(), "restore", "latest", "--target", str(out), "--json"]
    r = ctx.measure("restore", cmd)
    r.data_bytes = data
    if r.ok:
        r.details["allocated"] = allocated_bytes(out)
        r.ok = ctx.compare(out, "raw", "restored out.raw")
        r.note = f"output {allocated_bytes(out) / 1e6:.0f} MB allocated; " + (
            "verified equal" if r.ok else "DIFFERS"
        )
    ctx.report(r)
    if not ctx.keep:
        out.unlink(missing_ok=True)


def phase_serve(ctx: Context, phase: str, data: int, client: list[str]) -> PhaseResult | None:
    """Start ``strongroom serve`` through the launcher (for its peak RSS), run ``client`` (with
    ``{uri}`` filled in) through it too, then SIGTERM the server."""
    sock = ctx.run / "serve.sock"
    sock.unlink(missing_ok=True)
    ctx.warm([])
    stem = ctx.logs / f"{phase}-server"
    err = stem.with_suffix(".err")
    serve_cmd = [*strongroom_cmd(), "serve", "latest", "--socket", str(sock), "--json"]
    server = Spawned(serve_cmd, ctx.env(), ctx.run, stem)
    uri = ""
    deadline = time.monotonic() + 120
    while not uri and server.running and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            lines = stem.with_suffix(".out").read_text().splitlines()
        except FileNotFoundError:  # the launcher has not opened it yet
            continue
        for line in lines:
            if '"uri"' in line:
                uri = str(json.loads(line)["uri"])
    try:
        if not uri:
            ctx.fail(f"{LABELS[phase]}: the server did not start\n{tail(err)}")
            return None
        cmd = [part.replace("{uri}", uri) for part in client]
        m = run_measured(cmd, ctx.env(), ctx.run, ctx.logs / phase)
    finally:
        server.signal(signal.SIGTERM)
        served = server.finish(timeout=60)
        sock.unlink(missing_ok=True)
    r = ctx.record(phase, m, cmd)
    r.data_bytes = data
    r.peak_rss_kib = served.peak_rss_kib
    r.cpu_seconds = served.cpu_seconds
    r.details = {
        "uri": uri,
        "client_peak_rss_kib": m.peak_rss_kib,
        "client_cpu_seconds": m.cpu_seconds,
        "server_exit_code": served.exit_code,
    }
    r.note = f"client: {m.cpu_seconds:.1f} s CPU, {m.peak_rss_kib / 1024:.0f} MiB peak RSS"
    if served.exit_code not in (0, -signal.SIGTERM):
        r.ok = False
        ctx.fail(f"{LABELS[phase]}: server exit code {served.exit_code}\n{tail(err)}")
    return r


def run_serve(ctx: Context, data: int) -> None:
    r = phase_serve(ctx, "serve_nbdcopy", data, ["nbdcopy", "{uri}", "null:"])
    if r:
        ctx.report(r)
    out = ctx.run / "serve.raw"
    out.unlink(missing_ok=True)
    convert = ["qemu-img", "convert", "-f", "raw", "-O", "raw", "{uri}", str(out)]
    r = phase_serve(ctx, "serve_convert", data, convert)
    if r:
        if r.ok:
            r.ok = ctx.compare(out, "raw", "serve.raw (qemu-img convert from serve)")
            r.note += "; verified equal" if r.ok else "; DIFFERS"
        ctx.report(r)
    if not ctx.keep:
        out.unlink(missing_ok=True)


def run_all(ctx: Context) -> list[Rewrite]:
    """All phases in order; a failed backup ends the run (later phases need its point)."""
    size, seed = ctx.size, ctx.seed
    data = data_bytes(ctx.image)
    log(f"image: {size / GIB:g} GiB virtual, {data / 1e6:.0f} MB allocated as data")
    phase_reference(ctx, data)
    init = run_measured([*strongroom_cmd(), "init"], ctx.env(), ctx.run, ctx.logs / "init")
    if init.exit_code != 0:
        ctx.fail(f"strongroom init: exit code {init.exit_code}\n{tail(ctx.logs / 'init.err')}")
        return []
    if not phase_backup(ctx, "full", data, "auto", "full"):
        return []
    for tool in ctx.peers:
        phase_peer(ctx, tool, f"{tool.name}_full", data, first=True)
    rewrites = [rewrite(ctx.image, size, seed, 1, set())]
    log(_describe_rewrite(rewrites[-1]))
    data = data_bytes(ctx.image)
    ok = phase_backup(ctx, "bitmap", data, "auto", "bitmap")
    fixed_cost(ctx, "bitmap")
    for tool in ctx.peers:
        phase_peer(ctx, tool, f"{tool.name}_incr", data, first=False)
    bitmap = ctx.results["bitmap"]
    expected = rewrites[-1].blocks
    if bitmap.details.get("blocks_read") not in (None, expected):
        bitmap.note += f" (expected {expected} blocks read)"
    if not ok:
        return rewrites
    rewrites.append(rewrite(ctx.image, size, seed, 2, set(rewrites[0].block_list)))
    log(_describe_rewrite(rewrites[-1]))
    data = data_bytes(ctx.image)
    if not phase_backup(ctx, "compare", data, "compare", "compare"):
        return rewrites
    phase_restore(ctx, data)
    run_serve(ctx, data)
    return rewrites


def _describe_rewrite(w: Rewrite) -> str:
    return (
        f"rewrite {w.round}: {w.blocks} blocks of 1 MiB ({w.data_blocks} with data, "
        f"{w.hole_blocks} holes), {w.bytes_written / 1e6:.1f} MB written in {w.seconds:.1f} s"
    )


# --------------------------------------------------------------------------- targets and output


def compute_checks(results: dict[str, PhaseResult]) -> list[Check]:
    def seconds(phase: str) -> float | None:
        r = results.get(phase)
        return r.seconds if r is not None and r.ok else None

    ref, full, bitmap, restore = (seconds(p) for p in ("reference", "full", "bitmap", "restore"))
    checks = [ratio_check("full backup time / qemu-img convert time", full, ref, 2.5, upper=True)]
    for peer in PEERS:
        if f"{peer}_full" in results:
            checks.append(
                ratio_check(f"{peer} first backup / full backup time", seconds(f"{peer}_full"),
                            full, 2, upper=False)
            )  # fmt: skip
    checks.append(
        ratio_check("full backup time / bitmap incremental time", full, bitmap, 20, upper=False)
    )
    for peer in PEERS:
        if f"{peer}_incr" in results:
            checks.append(
                ratio_check(f"{peer} incremental / bitmap incremental time",
                            seconds(f"{peer}_incr"), bitmap, 20, upper=False)
            )  # fmt: skip
    fixed = results["bitmap"].details.get("fixed") if "bitmap" in results else None
    if isinstance(fixed, dict) and bitmap:
        cost = bitmap - fixed["work"]
        checks.append(info("  bitmap incremental: fixed cost, s (info)", cost, "s"))
        checks.append(info("  ... share of its time (info)", cost / bitmap))
    checks.append(
        ratio_check("restore time / qemu-img convert time", restore, ref, 1.5, upper=True)
    )
    synced = results.get("reference")
    flush = synced.details.get("fsync_seconds") if synced is not None else None
    if restore and ref and isinstance(flush, float):  # restore fsyncs; the reference does not
        checks.append(info("  same, reference + its fsync (info)", restore / (ref + flush)))
    serve = results.get("serve_nbdcopy")
    mbps = serve.mb_per_s if serve is not None and serve.ok else None
    checks.append(
        Check(
            "serve, nbdcopy sequential (data MB/s)",
            mbps,
            "MB/s",
            ">= 300 MB/s",
            None if mbps is None else mbps >= 300,
        )
    )
    return checks


PEER_NOTE = (
    "restic and borg (default settings) back up the image file itself, right after "
    "strongroom's full backup and its bitmap incremental, on the same file state; their "
    "second backup reads the whole file again and deduplicates."
)
SERVE_NOTE = (
    "serve rows: wall time of the client; RSS and CPU of the strongroom serve process "
    "(start, one client, SIGTERM)."
)


def environment(workdir: Path, kdf: str | None) -> dict[str, object]:
    versions = {
        "strongroom": version([*strongroom_cmd(), "--version"]),
        "qemu-img": version(["qemu-img", "--version"]),
        "nbdcopy": version(["nbdcopy", "--version"]),
    }
    env = machine(workdir, versions)
    env["kdf"] = kdf or "default"
    env["strongroom_command"] = " ".join(strongroom_cmd())
    return env


@dataclass
class Report:
    env: dict[str, object]
    meta: ImageMeta
    initial: int  # the image's data bytes before the rewrites
    data: int  # ... and at the end
    rewrites: list[Rewrite]
    runs: list[dict[str, PhaseResult]]
    results: dict[str, PhaseResult]  # median over runs
    checks: list[Check]
    failures: Failures

    def preamble(self) -> list[str]:
        n = len(self.runs)
        return [
            *(_describe_rewrite(w) for w in self.rewrites),
            "page cache: warm (image, repository, cache read, then sync, before each command); "
            + ("one run" if n == 1 else f"median of {n} runs"),
            MBPS_NOTE,
            SERVE_NOTE,
            PEER_NOTE,
            *(f"skipped: {line}" for line in self.env.get("skipped") or []),
            *self.fixed_lines(),
        ]

    def fixed_lines(self) -> list[str]:
        bitmap = self.results.get("bitmap")
        fixed = bitmap.details.get("fixed") if bitmap is not None else None
        if not isinstance(fixed, dict) or bitmap is None:
            return []
        return [
            f"bitmap incremental, {bitmap.seconds:.2f} s: start-up, repository open and point "
            f"record {fixed['startup_open_record']:.2f} s; parent, chunk index and its map "
            f"{fixed['parent_index_map']:.2f} s; source and bitmap tracker "
            f"{fixed['source_tracker']:.2f} s; retiring the old bitmap "
            f"{fixed.get('retire_bitmap', 0.0):.2f} s; reading and storing {fixed['work']:.2f} s"
        ]

    def tables(self, table: Table) -> list[str]:
        return [
            table(PHASE_HEADER, phase_rows(self.results, PHASES, LABELS), PHASE_ALIGN),
            "",
            table(CHECK_HEADER, check_rows(self.checks), CHECK_ALIGN),
        ]


def report_text(r: Report) -> str:
    out = [
        *head_text(r.env),
        describe_image(r.meta, r.initial, r.data),
        *r.preamble(),
        "",
        *r.tables(plain_table),
    ]
    return "\n".join(out + r.failures.text_lines())


def report_markdown(r: Report) -> str:
    out = [
        head_markdown(r.env),
        "",
        describe_image(r.meta, r.initial, r.data).replace("image: ", "Image: ", 1) + ".",
        sentences(r.preamble()),
        "",
        *r.tables(md_table),
    ]
    return "\n".join(out + r.failures.markdown_lines())


def json_doc(r: Report) -> dict[str, object]:
    return {
        "environment": r.env,
        "image": {**asdict(r.meta), "data_bytes": r.initial, "data_bytes_final": r.data},
        "rewrites": [asdict(w) for w in r.rewrites],
        "runs": [{p: x.to_json() for p, x in run.items()} for run in r.runs],
        "median": {p: x.to_json() for p, x in r.results.items()},
        "checks": [asdict(c) for c in r.checks],
        "failures": r.failures.items,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--size", type=float, default=8.0, help="virtual size in GiB (default 8)")
    p.add_argument("--data", type=float, default=3.0, help="data written in GiB (default 3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"sanity preset: {QUICK[0]:g} GiB image, {QUICK[1] * 1024:.0f} MiB of data",
    )
    p.add_argument(
        "--default-kdf", action="store_true", help="key file with the default (slow) KDF"
    )
    p.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="restic,borg (default), a subset, or none: backing up the same image file",
    )
    p.add_argument("--no-install", action="store_true", help="do not apt-get missing peers")
    cli.add_common(p, seed_help="data and rewrite seed", runs=True)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.data = QUICK
    cli.check_runs(p, args)
    args.peers = [] if args.peers == "none" else [x for x in args.peers.split(",") if x]
    if any(x not in PEERS for x in args.peers):
        p.error(f"--peers: restic, borg or none, not {','.join(args.peers)}")
    if not 0 < args.data <= 0.9 * args.size:
        p.error("need 0 < --data <= 0.9 x --size")
    return args


def one_run(
    base: Path, cached: Path, args: argparse.Namespace, size: int, index: int, peers: list[Tool]
) -> tuple[Context, list[Rewrite]]:
    """One pass over every phase on a fresh copy of the cached image, in its own directory."""
    run = base / (f"run-{index}" if args.keep else "run")
    if run.exists():
        shutil.rmtree(run)
    (run / "cache").mkdir(parents=True)
    logs = base / "logs" / f"run{index}"
    logs.mkdir(parents=True)
    kdf = None if args.default_kdf else FAST_KDF
    ctx = Context(run, logs, size, kdf, args.keep, LABELS, seed=args.seed, index=index, peers=peers)
    copy_file(cached, ctx.image)
    try:
        rewrites = run_all(ctx)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        ctx.fail(f"benchmark error: {exc}")
        rewrites = []
    ctx.final_data = data_bytes(ctx.image)
    if args.keep:
        log(f"  kept {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)
    return ctx, rewrites


def _as_installed() -> None:
    """Commands run with bytecode, as an installed package does: without ``.pyc`` files
    (``PYTHONDONTWRITEBYTECODE=1``, as development shells set) every strongroom command
    compiles its modules first, which costs an incremental more than its work (see
    ``bench/startup.py``)."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    probe = "import os, strongroom; print(os.path.dirname(strongroom.__file__))"
    where = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _as_installed()
    size, data = sizes(args.size, args.data)
    base = prepare(args.workdir, "images", 5 * data)
    require(("qemu-img", "qemu-nbd", "nbdcopy"), "apt-get install qemu-utils libnbd-bin")
    cached, meta = ensure_image(image_cache(base.parent), size, data, args.seed)
    shutil.rmtree(base / "logs", ignore_errors=True)
    kinds: dict[str, type[Tool]] = {"restic": Restic, "borg": Borg}
    peers, skipped = available([kinds[x]() for x in args.peers], not args.no_install)
    env = environment(base, None if args.default_kdf else FAST_KDF)
    env["peers"] = {t.name: t.version() for t in peers}
    env["skipped"] = skipped
    initial = data_bytes(cached)
    log(describe_image(meta, initial))
    done = run_rounds(
        args.runs, lambda index: one_run(base, cached, args, size, index, peers), args.warmup
    )
    contexts = [ctx for ctx, _ in done]
    rewrites = done[-1][1]
    runs = [c.results for c in contexts]
    results = median_results(runs, PHASES)
    failures = Failures()
    for c in contexts:
        failures.items += [f"run {c.index}: {f}" if args.runs > 1 else f for f in c.failures.items]
    report = Report(
        env,
        meta,
        initial,
        contexts[-1].final_data,
        rewrites,
        runs,
        results,
        compute_checks(results),
        failures,
    )
    text = report_markdown(report) if args.markdown else report_text(report)
    return finish(text, json_doc(report), args.json, base / "logs", failures)


if __name__ == "__main__":
    sys.exit(main())
