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
* Conventions of ``bench/files.py``: every timed command runs through ``bench/spawn.py`` (wall
  time, peak RSS of the tool itself, CPU time); the page cache is warm (the image, the
  repository and strongroom's cache are read, then ``sync``, before each command); progress on
  stderr, the report on stdout; each command's output in ``WORKDIR/images/logs/``.
* The image is generated once per seed and sizes into ``WORKDIR/images/cache/`` (a sparse raw
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

Targets: full backup <= 1.3x the ``qemu-img convert`` time; bitmap incremental >= 20x faster
than the full backup; restore <= 1.3x the ``qemu-img convert`` time; ``serve`` (nbdcopy)
>= 300 MB/s of data bytes.

Usage::

    nice -n 10 python bench/images.py [--size 8] [--data 3] [--quick] [--runs 1] [--seed N]
                                      [--workdir DIR] [--keep] [--json FILE] [--markdown]
                                      [--default-kdf]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from dataset import DEFAULT_SEED, GIB, KIB, MIB, TextSource
from files import (
    SPAWN,
    Measurement,
    cpu_model,
    default_workdir,
    filesystem_type,
    log,
    run_measured,
    tail,
    tree_bytes,
    warm_page_cache,
)

IMAGE_VERSION = 1
PASSWORD = "bench-password-not-secret"
FAST_KDF = "1,8192,1"
BLOCK = 1 * MIB  # strongroom's default block size; the rewrites count in these blocks
UNIT = 64 * KIB  # extent placement granularity
PAGE = 4 * KIB  # zero runs inside data are page-aligned, like a file system's free pages
REWRITE_SHARE = 0.01
REWRITE_HOLES = 0.15  # share of the rewritten blocks chosen among holes

# Shares of the extents' bytes; zero runs take ZERO_FRACTION of text and random extents, so the
# image holds ~45 % text, ~35 % incompressible, ~10 % zero runs, ~10 % duplicates.
EXTENT_SHARES = {"text": 0.50, "random": 0.39, "duplicate": 0.11}
ZERO_FRACTION = 0.112

PHASES = ("reference", "full", "bitmap", "compare", "restore", "serve_nbdcopy", "serve_convert")
LABELS = {
    "reference": "qemu-img convert (reference)",
    "full": "full backup",
    "bitmap": "1% incremental, bitmap",
    "compare": "1% incremental, compare",
    "restore": "restore to raw",
    "serve_nbdcopy": "serve: nbdcopy -> null",
    "serve_convert": "serve: qemu-img convert",
}
QUICK = (1.0, 0.375)  # --quick: 1 GiB image, 384 MiB of data


# --------------------------------------------------------------------------- the image


@dataclass
class ImageMeta:
    """What was generated: stored as JSON next to the cached qcow2."""

    version: int
    seed: int
    size: int
    data_requested: int
    extents: int
    composition: dict[str, int]  # category -> bytes written (text, random, zeros, duplicate)
    generate_seconds: float = 0.0


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def plan_layout(size: int, data: int, seed: int) -> list[tuple[int, int, str]]:
    """(offset, length, kind) of the data extents, in address order, not overlapping.

    Lengths are log-uniform in 1-64 MiB (multiples of 64 KiB); the free space is cut at random
    points into the gaps between them, so offsets are random and 64 KiB-aligned. Kinds follow
    EXTENT_SHARES by bytes (the kind furthest below its share is next)."""
    rng = random.Random(f"images:{seed}:layout")
    want = data // UNIT
    lengths: list[int] = []
    total = 0
    while total < want:
        units = max(MIB // UNIT, round(_log_uniform(rng, 1, 64) * MIB / UNIT))
        units = min(units, want - total)
        lengths.append(units)
        total += units
    gap = size // UNIT - total
    cuts = sorted(rng.randrange(gap + 1) for _ in lengths)
    layout: list[tuple[int, int, str]] = []
    done = {kind: 0 for kind in EXTENT_SHARES}
    pos = previous = 0
    for units, cut in zip(lengths, cuts, strict=True):
        pos += cut - previous
        previous = cut
        after = sum(done.values()) + units
        kinds = [k for k in EXTENT_SHARES if k != "duplicate" or layout]
        kind = max(kinds, key=lambda k: EXTENT_SHARES[k] * after - done[k])
        done[kind] += units
        layout.append((pos * UNIT, units * UNIT, kind))
        pos += units
    return layout


def _punch_zero_runs(rng: random.Random, buf: bytearray) -> int:
    """Zero ~ZERO_FRACTION of ``buf`` in page-aligned runs of 4-256 KiB; returns bytes zeroed."""
    pages = len(buf) // PAGE
    target = round(ZERO_FRACTION * pages)
    zeroed: set[int] = set()
    while len(zeroed) < target:
        run = rng.randint(1, 64)
        start = rng.randrange(max(1, pages - run))
        for page in range(start, min(pages, start + run)):
            if page not in zeroed:
                zeroed.add(page)
                buf[page * PAGE : (page + 1) * PAGE] = bytes(PAGE)
    return len(zeroed) * PAGE


def generate_raw(path: Path, size: int, data: int, seed: int) -> ImageMeta:
    """Write the sparse raw image: the extents of ``plan_layout``, deterministic by seed."""
    layout = plan_layout(size, data, seed)
    text_rng = random.Random(f"images:{seed}:text")
    text = TextSource(text_rng)
    rand_rng = random.Random(f"images:{seed}:random")
    zero_rng = random.Random(f"images:{seed}:zeros")
    dup_rng = random.Random(f"images:{seed}:duplicate")
    comp = {"text": 0, "random": 0, "zeros": 0, "duplicate": 0}
    written: list[tuple[int, int]] = []  # original (non-duplicate) extents so far
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for offset, length, kind in layout:
            if kind == "duplicate":
                # Copy earlier extents, keeping their offset within a 1 MiB block so that whole
                # blocks are identical (a cloned file or VM template, block-aligned).
                pos = offset
                while pos < offset + length:
                    src, src_len = dup_rng.choice(written)
                    start = src + (pos - src) % BLOCK
                    n = min(offset + length - pos, src + src_len - start)
                    if n <= 0:
                        continue
                    os.pwrite(fd, os.pread(fd, n, start), pos)
                    pos += n
                comp["duplicate"] += length
                continue
            if kind == "text":
                buf = bytearray(text.text(text_rng, length))
            else:
                buf = bytearray(rand_rng.randbytes(length))
            zeros = _punch_zero_runs(zero_rng, buf)
            comp["zeros"] += zeros
            comp[kind] += length - zeros
            os.pwrite(fd, buf, offset)
            written.append((offset, length))
    finally:
        os.close(fd)
    return ImageMeta(IMAGE_VERSION, seed, size, data, len(layout), comp)


def ensure_image(cache: Path, size: int, data: int, seed: int) -> tuple[Path, ImageMeta]:
    """The cached qcow2 for (seed, size, data), generated when missing."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"disk-v{IMAGE_VERSION}-s{seed}-{size}-{data}"
    qcow2, meta_path = stem.with_suffix(".qcow2"), stem.with_suffix(".json")
    if qcow2.exists() and meta_path.exists():
        meta = ImageMeta(**json.loads(meta_path.read_text()))
        if meta.version == IMAGE_VERSION:
            return qcow2, meta
    log(f"generating the image ({size / GIB:g} GiB, {data / GIB:g} GiB of data) in {cache} ...")
    t0 = time.perf_counter()
    raw, tmp = stem.with_suffix(".raw"), stem.with_suffix(".qcow2.tmp")
    try:
        meta = generate_raw(raw, size, data, seed)
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)], check=True
        )
        tmp.rename(qcow2)
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    meta.generate_seconds = round(time.perf_counter() - t0, 1)
    meta_path.write_text(json.dumps(asdict(meta), indent=2) + "\n")
    log(f"  generated in {meta.generate_seconds:.0f} s")
    return qcow2, meta


def image_map(path: Path, fmt: str = "qcow2") -> list[dict[str, object]]:
    out = subprocess.run(
        ["qemu-img", "map", "-f", fmt, "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entries: list[dict[str, object]] = json.loads(out)
    return entries


def data_extents(path: Path, fmt: str = "qcow2") -> list[tuple[int, int]]:
    """(offset, length) of the ranges allocated as data (not holes, not zero clusters)."""
    return [
        (int(e["start"]), int(e["length"]))  # type: ignore[call-overload]
        for e in image_map(path, fmt)
        if e.get("data") and not e.get("zero")
    ]


def data_bytes(path: Path, fmt: str = "qcow2") -> int:
    return sum(n for _, n in data_extents(path, fmt))


def allocated_bytes(path: Path) -> int:
    """Bytes the file occupies on disk (a sparse raw file's data)."""
    return os.stat(path).st_blocks * 512


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
class PhaseResult:
    phase: str
    seconds: float = 0.0
    peak_rss_kib: int = 0
    cpu_seconds: float = 0.0
    exit_code: int = 0
    ok: bool = False
    data_bytes: int = 0  # the image's data at this phase: the MB/s basis
    virtual_bytes: int = 0
    repo_bytes: int = 0
    note: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.data_bytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def virtual_mb_per_s(self) -> float:
        return self.virtual_bytes / 1e6 / self.seconds if self.seconds else 0.0


@dataclass
class Context:
    run: Path  # run directory: image, repository, outputs
    logs: Path
    size: int
    seed: int
    kdf: str | None
    keep: bool
    index: int = 1
    final_data: int = 0
    results: dict[str, PhaseResult] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def image(self) -> Path:
        return self.run / "disk.qcow2"

    @property
    def repo(self) -> Path:
        return self.run / "repo"

    @property
    def cache(self) -> Path:
        return self.run / "cache"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "STRONGROOM_REPO": str(self.repo),
                "STRONGROOM_PASSWORD": PASSWORD,
                "XDG_CACHE_HOME": str(self.cache / "xdg-cache"),
                "XDG_CONFIG_HOME": str(self.cache / "xdg-config"),
            }
        )
        if self.kdf:
            env["STRONGROOM_KDF"] = self.kdf
        else:
            env.pop("STRONGROOM_KDF", None)
        return env

    def fail(self, what: str) -> None:
        self.failures.append(what)
        log(f"  FAILED: {what}")


def strongroom_cmd() -> list[str]:
    """This interpreter's console script, else the one on PATH, else ``python -m strongroom``.

    Not a pyenv shim first: the shim is a bash script that runs ``pyenv exec``, adding about
    0.5 s to every command (as much as a whole 1 % incremental backup)."""
    local = Path(sys.executable).with_name("strongroom")
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    exe = shutil.which("strongroom")
    return [exe] if exe else [sys.executable, "-m", "strongroom"]


def warm_file(path: Path) -> None:
    buf = bytearray(4 * MIB)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def warm(ctx: Context, image: bool) -> None:
    """Warm page cache for what the next command reads, then flush earlier writes."""
    if image:
        warm_file(ctx.image)
    warm_page_cache(ctx.repo)
    warm_page_cache(ctx.cache)
    os.sync()


def measure(ctx: Context, phase: str, cmd: list[str], *, image: bool = True) -> PhaseResult:
    warm(ctx, image)
    m = run_measured(cmd, ctx.env(), ctx.run, ctx.logs / phase)
    return record(ctx, phase, m, cmd)


def record(ctx: Context, phase: str, m: Measurement, cmd: list[str]) -> PhaseResult:
    r = PhaseResult(
        phase,
        m.seconds,
        m.peak_rss_kib,
        m.cpu_seconds,
        m.exit_code,
        ok=m.exit_code == 0,
        virtual_bytes=ctx.size,
    )
    ctx.results[phase] = r
    if not r.ok:
        ctx.fail(f"{LABELS[phase]}: exit code {m.exit_code}")
        log(f"  $ {' '.join(cmd)}\n{tail((ctx.logs / phase).with_suffix('.err'))}")
    return r


def report_phase(r: PhaseResult) -> None:
    log(
        f"  {LABELS[r.phase]:<30} {r.seconds:8.2f} s {r.mb_per_s:8.1f} MB/s "
        f"{r.peak_rss_kib / 1024:7.1f} MiB RSS {r.cpu_seconds:7.2f} s CPU"
        + (f"  {r.note}" if r.note else "")
        + ("" if r.ok else "  FAILED")
    )


def summary_json(ctx: Context, phase: str) -> dict[str, object]:
    """The last JSON object with message_type "summary" the command printed."""
    found: dict[str, object] = {}
    for line in (ctx.logs / phase).with_suffix(".out").read_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("message_type") == "summary":
            found = doc
    return found


def compare_images(ctx: Context, a: Path, a_fmt: str, what: str) -> bool:
    """``qemu-img compare`` of ``a`` with the image (not timed)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        ["qemu-img", "compare", "-f", a_fmt, "-F", "qcow2", str(a), str(ctx.image)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        ctx.fail(f"{what}: differs from the image: {(done.stdout + done.stderr).strip()}")
        return False
    log(f"  {what}: identical to the image ({time.perf_counter() - t0:.0f} s to check)")
    return True


def phase_reference(ctx: Context, data: int) -> None:
    out = ctx.run / "ref.raw"
    cmd = ["qemu-img", "convert", "-O", "raw", str(ctx.image), str(out)]
    r = measure(ctx, "reference", cmd)
    r.data_bytes = data
    if r.ok:
        # qemu-img convert leaves its output in the page cache; strongroom's restore fsyncs.
        # Time the flush separately (not part of the reference) to show what it costs here.
        t0 = time.perf_counter()
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        r.details["fsync_seconds"] = time.perf_counter() - t0
        r.details["allocated"] = allocated_bytes(out)
        r.note = (
            f"output {allocated_bytes(out) / 1e6:.0f} MB allocated, not fsynced "
            f"(an fsync after it: {r.details['fsync_seconds']:.2f} s)"
        )
    report_phase(r)
    if not ctx.keep:
        out.unlink(missing_ok=True)


def phase_backup(ctx: Context, phase: str, data: int, tracker: str, expect: str) -> bool:
    cmd = [*strongroom_cmd(), "backup", "--image", str(ctx.image), "--json"]
    if tracker != "auto":
        cmd += ["--changed-since", tracker]
    r = measure(ctx, phase, cmd)
    r.data_bytes = data
    r.repo_bytes = tree_bytes(ctx.repo)
    if r.ok:
        s = summary_json(ctx, phase)
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
            f"{s.get('tracker')}: read {_mb(s.get('bytes_read'))} MB "
            f"({s.get('blocks_read')} blocks), {s.get('blocks_changed')} changed, "
            f"+{_mb(s.get('data_added_stored'))} MB stored; repo {r.repo_bytes / 1e6:.0f} MB"
        )
        if s.get("tracker") != expect:
            r.ok = False
            why = s.get("tracker_note") or "no note"
            ctx.fail(f"{LABELS[phase]}: tracker {s.get('tracker')!r}, expected {expect!r} ({why})")
    report_phase(r)
    return r.ok


def _mb(value: object) -> str:
    return f"{int(value) / 1e6:.1f}" if isinstance(value, int | float) else "?"


def phase_restore(ctx: Context, data: int) -> None:
    out = ctx.run / "out.raw"
    out.unlink(missing_ok=True)
    cmd = [*strongroom_cmd(), "restore", "latest", "--target", str(out), "--json"]
    r = measure(ctx, "restore", cmd, image=False)
    r.data_bytes = data
    if r.ok:
        r.details["allocated"] = allocated_bytes(out)
        r.ok = compare_images(ctx, out, "raw", "restored out.raw")
        r.note = f"output {allocated_bytes(out) / 1e6:.0f} MB allocated; " + (
            "verified equal" if r.ok else "DIFFERS"
        )
    report_phase(r)
    if not ctx.keep:
        out.unlink(missing_ok=True)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (scan of /proc: no CONFIG_PROC_CHILDREN here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def phase_serve(ctx: Context, phase: str, data: int, client: list[str]) -> PhaseResult | None:
    """Start ``strongroom serve`` through spawn.py (for its peak RSS), run ``client`` (with
    ``{uri}`` filled in) through spawn.py too, then SIGTERM the server."""
    sock = ctx.run / "serve.sock"
    sock.unlink(missing_ok=True)
    warm(ctx, image=False)
    stem = ctx.logs / f"{phase}-server"
    err = stem.with_suffix(".err")
    serve_cmd = [*strongroom_cmd(), "serve", "latest", "--socket", str(sock), "--json"]
    err.write_text(f"$ {' '.join(serve_cmd)}\n")
    spec = {
        "cmd": serve_cmd,
        "env": ctx.env(),
        "cwd": str(ctx.run),
        "stdout": str(stem.with_suffix(".out")),
        "stderr": str(err),
    }
    with tempfile.TemporaryFile("w+") as spec_file:
        json.dump(spec, spec_file)
        spec_file.seek(0)
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SPAWN)],
            stdin=spec_file,
            stdout=subprocess.PIPE,
            text=True,
        )
    uri = ""
    deadline = time.monotonic() + 120
    while not uri and launcher.poll() is None and time.monotonic() < deadline:
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
        for pid in _children(launcher.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            out, _ = launcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for pid in _children(launcher.pid):
                os.kill(pid, signal.SIGKILL)
            out, _ = launcher.communicate()
        sock.unlink(missing_ok=True)
    server = json.loads(out)
    r = record(ctx, phase, m, cmd)
    r.data_bytes = data
    r.peak_rss_kib = server["maxrss_kib"]
    r.cpu_seconds = server["cpu_seconds"]
    r.details = {
        "uri": uri,
        "client_peak_rss_kib": m.peak_rss_kib,
        "client_cpu_seconds": m.cpu_seconds,
        "server_exit_code": server["exit_code"],
    }
    r.note = f"client: {m.cpu_seconds:.1f} s CPU, {m.peak_rss_kib / 1024:.0f} MiB peak RSS"
    if server["exit_code"] not in (0, -signal.SIGTERM):
        r.ok = False
        ctx.fail(f"{LABELS[phase]}: server exit code {server['exit_code']}\n{tail(err)}")
    return r


def run_serve(ctx: Context, data: int) -> None:
    r = phase_serve(ctx, "serve_nbdcopy", data, ["nbdcopy", "{uri}", "null:"])
    if r:
        report_phase(r)
    out = ctx.run / "serve.raw"
    out.unlink(missing_ok=True)
    convert = ["qemu-img", "convert", "-f", "raw", "-O", "raw", "{uri}", str(out)]
    r = phase_serve(ctx, "serve_convert", data, convert)
    if r:
        if r.ok:
            r.ok = compare_images(ctx, out, "raw", "serve.raw (qemu-img convert from serve)")
            r.note += "; verified equal" if r.ok else "; DIFFERS"
        report_phase(r)
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
    rewrites = [rewrite(ctx.image, size, seed, 1, set())]
    log(_describe_rewrite(rewrites[-1]))
    data = data_bytes(ctx.image)
    ok = phase_backup(ctx, "bitmap", data, "auto", "bitmap")
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


@dataclass
class Check:
    metric: str
    value: float | None
    unit: str
    target: str
    passed: bool | None


def compute_checks(results: dict[str, PhaseResult]) -> list[Check]:
    def seconds(phase: str) -> float | None:
        r = results.get(phase)
        return r.seconds if r is not None and r.ok else None

    ref, full, bitmap, restore = (seconds(p) for p in ("reference", "full", "bitmap", "restore"))
    checks = []

    def ratio(metric: str, a: float | None, b: float | None, limit: float, upper: bool) -> None:
        value = a / b if a and b else None
        passed = None if value is None else (value <= limit if upper else value >= limit)
        target = f"{'<=' if upper else '>='} {limit:g}x"
        checks.append(Check(metric, value, "x", target, passed))

    ratio("full backup time / qemu-img convert time", full, ref, 1.3, upper=True)
    ratio("full backup time / bitmap incremental time", full, bitmap, 20, upper=False)
    ratio("restore time / qemu-img convert time", restore, ref, 1.3, upper=True)
    synced = results.get("reference")
    flush = synced.details.get("fsync_seconds") if synced is not None else None
    if restore and ref and isinstance(flush, float):  # restore fsyncs; the reference does not
        value = restore / (ref + flush)
        checks.append(Check("  same, reference + its fsync (info)", value, "x", "-", None))
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


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def phase_rows(
    results: dict[str, PhaseResult],
    phases: Sequence[str] = PHASES,
    labels: dict[str, str] = LABELS,
) -> list[list[str]]:
    """Table rows of the phases, in order (bench/vhd.py passes its own)."""
    rows = []
    for phase in phases:
        r = results.get(phase)
        if r is None:
            rows.append([labels[phase], "-", "-", "-", "-", "-", "not run"])
            continue
        rows.append(
            [
                labels[phase],
                f"{r.seconds:.2f}",
                f"{r.mb_per_s:.1f}",
                f"{r.virtual_mb_per_s:.0f}",
                f"{r.peak_rss_kib / 1024:.1f}",
                f"{r.cpu_seconds:.1f}",
                ("" if r.ok else "FAILED; ") + r.note,
            ]
        )
    return rows


def check_rows(checks: list[Check]) -> list[list[str]]:
    rows = []
    for c in checks:
        value = "n/a" if c.value is None else f"{c.value:.2f}{'x' if c.unit == 'x' else ''}"
        if c.unit == "MB/s" and c.value is not None:
            value = f"{c.value:.0f} MB/s"
        rows.append([c.metric, value, c.target, "-" if c.target == "-" else verdict(c.passed)])
    return rows


PHASE_HEADER = ["phase", "s", "data MB/s", "virt MB/s", "peak RSS MiB", "CPU s", "notes"]
PHASE_ALIGN = "lrrrrrl"
CHECK_ALIGN = "lrll"
CHECK_HEADER = ["target", "measured", "wanted", "result"]
MBPS_NOTE = (
    "MB/s = 10^6 data bytes (allocated in the image, per qemu-img map) per second; virt MB/s "
    "counts the virtual size, holes included, which every reader here skips through block "
    "status: the targets are judged on data bytes."
)
SERVE_NOTE = (
    "serve rows: wall time of the client; RSS and CPU of the strongroom serve process "
    "(start, one client, SIGTERM)."
)


def environment(workdir: Path, kdf: str | None) -> dict[str, object]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "strongroom": _version([*strongroom_cmd(), "--version"]),
            "qemu-img": _version(["qemu-img", "--version"]),
            "nbdcopy": _version(["nbdcopy", "--version"]),
        },
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "filesystem": filesystem_type(workdir),
        "workdir": str(workdir),
        "kdf": kdf or "default",
        "strongroom_command": " ".join(strongroom_cmd()),
    }


def _version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    first = lines[0] if lines else ""
    return first if done.returncode == 0 else f"unknown (exit {done.returncode}: {lines[-1:]})"


def describe_image(meta: ImageMeta, data: int, final: int | None = None) -> str:
    comp = meta.composition
    total = sum(comp.values()) or 1
    parts = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in comp.items())
    after = f" ({final / 1e6:.0f} MB after the rewrites)" if final else ""
    return (
        f"image: qcow2, {meta.size / GIB:g} GiB virtual, {meta.data_requested / GIB:g} GiB "
        f"written in {meta.extents} extents of 1-64 MiB ({parts}); {data / 1e6:.0f} MB "
        f"allocated as data{after}; seed {meta.seed}"
    )


def plain_table(header: list[str], rows: list[list[str]], align: str) -> str:
    """Aligned text table; ``align`` has one letter per column: l(eft) or r(ight)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def md_table(header: list[str], rows: list[list[str]], align: str) -> str:
    """GitHub markdown table; ``align`` has one letter per column: l(eft) or r(ight)."""
    rule = [":---" if a == "l" else "---:" for a in align]
    return "\n".join("| " + " | ".join(row) + " |" for row in [header, rule, *rows])


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
    failures: list[str]

    def preamble(self) -> list[str]:
        n = len(self.runs)
        return [
            *(_describe_rewrite(w) for w in self.rewrites),
            "page cache: warm (image, repository, cache read, then sync, before each command); "
            + ("one run" if n == 1 else f"median of {n} runs"),
            MBPS_NOTE,
            SERVE_NOTE,
        ]


def report_text(r: Report) -> str:
    env, versions = r.env, r.env["versions"]
    assert isinstance(versions, dict)
    out = [
        f"date {env['date']}  python {env['python']}  kernel {env['kernel']}",
        f"cpu: {env['cpu_count']} x {env['cpu_model']}, {env['memory_gib']} GiB RAM, load "
        f"average at start {env['load_average']}; workdir {env['workdir']} "
        f"({env['filesystem']}); KDF {env['kdf']}",
        *(f"{name}: {v}" for name, v in versions.items()),
        f"strongroom command: {env['strongroom_command']}",
        describe_image(r.meta, r.initial, r.data),
        *r.preamble(),
        "",
        plain_table(PHASE_HEADER, phase_rows(r.results), PHASE_ALIGN),
        "",
        plain_table(CHECK_HEADER, check_rows(r.checks), CHECK_ALIGN),
    ]
    if r.failures:
        out += ["", "failures:", *(f"  {f}" for f in r.failures)]
    return "\n".join(out)


def report_markdown(r: Report) -> str:
    env, versions = r.env, r.env["versions"]
    assert isinstance(versions, dict)
    out = [
        f"Measured {env['date']} on {env['cpu_count']} x {env['cpu_model']}, "
        f"{env['memory_gib']} GiB RAM, Python {env['python']}, {env['filesystem']}, load "
        f"average {env['load_average']}; " + ", ".join(str(v) for v in versions.values()) + ".",
        "",
        describe_image(r.meta, r.initial, r.data).replace("image: ", "Image: ", 1) + ".",
        " ".join(line[0].upper() + line[1:].rstrip(".") + "." for line in r.preamble()),
        "",
        md_table(PHASE_HEADER, phase_rows(r.results), PHASE_ALIGN),
        "",
        md_table(CHECK_HEADER, check_rows(r.checks), CHECK_ALIGN),
    ]
    if r.failures:
        out += ["", "Failures: " + "; ".join(f.splitlines()[0] for f in r.failures)]
    return "\n".join(out)


def _phases_json(results: dict[str, PhaseResult]) -> dict[str, object]:
    return {
        p: {**asdict(r), "mb_per_s": r.mb_per_s, "virtual_mb_per_s": r.virtual_mb_per_s}
        for p, r in results.items()
    }


def write_json(path: Path, r: Report) -> None:
    doc = {
        "environment": r.env,
        "image": {**asdict(r.meta), "data_bytes": r.initial, "data_bytes_final": r.data},
        "rewrites": [asdict(w) for w in r.rewrites],
        "runs": [_phases_json(run) for run in r.runs],
        "median": _phases_json(r.results),
        "checks": [asdict(c) for c in r.checks],
        "failures": r.failures,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=8.0, help="virtual size in GiB (default 8)")
    p.add_argument("--data", type=float, default=3.0, help="data written in GiB (default 3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"sanity preset: {QUICK[0]:g} GiB image, {QUICK[1] * 1024:.0f} MiB of data",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data and rewrite seed")
    p.add_argument("--workdir", type=Path, default=None, help="scratch dir (not on tmpfs)")
    p.add_argument("--keep", action="store_true", help="keep the run directories and outputs")
    p.add_argument("--runs", type=int, default=1, help="runs; the median is reported")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument(
        "--default-kdf", action="store_true", help="key file with the default (slow) KDF"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.data = QUICK
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if not 0 < args.data <= 0.9 * args.size:
        p.error("need 0 < --data <= 0.9 x --size")
    return args


def one_run(
    base: Path, cached: Path, args: argparse.Namespace, size: int, index: int
) -> tuple[Context, list[Rewrite]]:
    """One pass over every phase on a fresh copy of the cached image, in its own directory."""
    run = base / (f"run-{index}" if args.keep else "run")
    if run.exists():
        shutil.rmtree(run)
    (run / "cache").mkdir(parents=True)
    logs = base / "logs" / f"run{index}"
    logs.mkdir(parents=True)
    kdf = None if args.default_kdf else FAST_KDF
    ctx = Context(run, logs, size, args.seed, kdf, args.keep, index)
    subprocess.run(["cp", "--reflink=auto", str(cached), str(ctx.image)], check=True)
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


def median_results(runs: list[dict[str, PhaseResult]]) -> dict[str, PhaseResult]:
    """Per phase: the run with the median time (its notes), with median RSS and CPU; ok only
    if the phase succeeded in every run."""
    out: dict[str, PhaseResult] = {}
    for phase in PHASES:
        done = [r[phase] for r in runs if phase in r]
        if not done:
            continue
        ordered = sorted(done, key=lambda r: r.seconds)
        mid = replace(ordered[(len(ordered) - 1) // 2])
        mid.peak_rss_kib = int(statistics.median(r.peak_rss_kib for r in done))
        mid.cpu_seconds = statistics.median(r.cpu_seconds for r in done)
        mid.ok = len(done) == len(runs) and all(r.ok for r in done)
        out[phase] = mid
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = int(args.size * GIB) // BLOCK * BLOCK
    data = int(args.data * GIB) // UNIT * UNIT
    workdir = (args.workdir or default_workdir()).resolve()
    base = workdir / "images"
    base.mkdir(parents=True, exist_ok=True)
    fstype = filesystem_type(base)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{workdir} is on {fstype}: use --workdir on a real disk")
    for tool in ("qemu-img", "qemu-nbd", "nbdcopy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install qemu-utils libnbd-bin)")
    need = 5 * data
    if shutil.disk_usage(base).free < need:
        log(f"warning: less than {need / GIB:.1f} GiB free in {base}")

    cached, meta = ensure_image(base / "cache", size, data, args.seed)
    shutil.rmtree(base / "logs", ignore_errors=True)
    kdf = None if args.default_kdf else FAST_KDF
    env = environment(base, kdf)
    initial = data_bytes(cached)
    log(describe_image(meta, initial))
    contexts: list[Context] = []
    rewrites: list[Rewrite] = []
    for index in range(1, args.runs + 1):
        log(f"[run {index}/{args.runs}]")
        ctx, rewrites = one_run(base, cached, args, size, index)
        contexts.append(ctx)
    runs = [c.results for c in contexts]
    results = median_results(runs)
    failures = [f"run {c.index}: {f}" if args.runs > 1 else f for c in contexts for f in c.failures]
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
    print(report_markdown(report) if args.markdown else report_text(report))
    if args.json:
        write_json(args.json, report)
        log(f"results written to {args.json}")
    log(f"logs in {base / 'logs'}")
    if failures:
        log("FAILED: " + "; ".join(f.splitlines()[0] for f in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
