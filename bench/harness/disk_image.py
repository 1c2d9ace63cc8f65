"""The generated disk image shared by the block benchmarks (``images.py``, ``vhd.py``,
``vms.py``): a qcow2 holding realistic data, cached by seed and sizes.

A sparse raw file of extents of 1-64 MiB at random 64 KiB-aligned offsets (~45 % text/code-like
data from ``dataset.TextSource``, ~35 % incompressible data, ~10 % copies of earlier extents at
the same offset within a 1 MiB block, so whole blocks deduplicate, ~10 % short zero runs inside
the data), converted to qcow2, stored in ``WORKDIR/images/cache/`` and regenerated only when
missing (~40 s for 8 GiB). Every benchmark copies it fresh into its run folder (backups add
dirty bitmaps to it). MB/s of the block benchmarks counts *data bytes*: the clusters allocated
as data, per ``qemu-img map``.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.dataset import TextSource
from harness.spawn import log
from harness.workspace import GIB, KIB, MIB

IMAGE_VERSION = 1
BLOCK = 1 * MIB  # strongroom's default block size; the rewrites count in these blocks
UNIT = 64 * KIB  # extent placement granularity
PAGE = 4 * KIB  # zero runs inside data are page-aligned, like a file system's free pages

# Shares of the extents' bytes; zero runs take ZERO_FRACTION of text and random extents, so the
# image holds ~45 % text, ~35 % incompressible, ~10 % zero runs, ~10 % duplicates.
EXTENT_SHARES = {"text": 0.50, "random": 0.39, "duplicate": 0.11}
ZERO_FRACTION = 0.112
QUICK = (1.0, 0.375)  # --quick of images.py and vhd.py: 1 GiB image, 384 MiB of data


def image_cache(workdir: Path) -> Path:
    """Where the generated images are kept, shared by every block benchmark."""
    return workdir / "images" / "cache"


def sizes(size_gib: float, data_gib: float) -> tuple[int, int]:
    """(virtual size rounded down to whole blocks, data rounded down to whole units)."""
    return int(size_gib * GIB) // BLOCK * BLOCK, int(data_gib * GIB) // UNIT * UNIT


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


def image_map(path: Path, fmt: str = "qcow2", live: bool = False) -> list[dict[str, object]]:
    """``qemu-img map`` of the image; ``live``: of an image in use (``-U``, no lock)."""
    out = subprocess.run(
        ["qemu-img", "map", *(["-U"] if live else []), "-f", fmt, "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entries: list[dict[str, object]] = json.loads(out)
    return entries


def data_extents(path: Path, fmt: str = "qcow2", live: bool = False) -> list[tuple[int, int]]:
    """(offset, length) of the ranges allocated as data (not holes, not zero clusters)."""
    return [
        (int(e["start"]), int(e["length"]))  # type: ignore[call-overload]
        for e in image_map(path, fmt, live)
        if e.get("data") and not e.get("zero")
    ]


def data_bytes(path: Path, fmt: str = "qcow2", live: bool = False) -> int:
    """Bytes allocated as data: the MB/s basis of the block benchmarks."""
    return sum(n for _, n in data_extents(path, fmt, live))


def allocated_bytes(path: Path) -> int:
    """Bytes the file occupies on disk (a sparse raw file's data)."""
    return os.stat(path).st_blocks * 512


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
