#!/usr/bin/env python3
"""VHD backup mode benchmark: ``strongroom protect`` cycles against restic, borg and a hand-made
ext4-in-VHD, on one generated directory tree, in one run.

What is measured
----------------
One tree (``bench/dataset.py``'s generator: source files, thousands of small files, compressed
and random files, one large image file; default 1 GiB, about 25,000 files; ``--quick`` 200 MiB,
about 5,000) is copied to ``WORKDIR/protect/run/data`` and stays at that path for every tool.
In order:

1. ``first``: ``strongroom protect DATA --to DEST --state STATE --name bench --json`` (the first
   cycle: ``mke2fs -d`` builds the metadata disk, the whole disk ships as a dynamic VHD);
   ``restic backup`` and ``borg create`` into fresh repositories (``init`` not timed); and the
   hand-made equivalent: ``mke2fs -t ext4 -d DATA ref.img SIZE`` (SIZE: the metadata disk's
   size strongroom chose) then ``qemu-img convert -O vpc -o subformat=dynamic ref.img ref.vhd``,
   each timed, shown separately and summed.
2. ``change``: 1 % of the files change, deterministically by seed: 40 % of them are rewritten
   in place (files of 1 MiB or more: four 64 KiB regions; smaller ones: the whole content),
   30 % appended to (1-16 KiB), 15 % renamed (half in their folder, half into another), 15 %
   deleted; a few new files (0.15 % of the tree) are created. Then a protect cycle (a
   differencing VHD of the blocks debugfs wrote) and an incremental restic and borg backup.
3. ``nochange``: nothing changed since: a protect cycle (ships nothing) and restic and borg
   backups.

Per command: wall time (the harness's launcher, so the interpreter's start-up is included), CPU
time and peak RSS as ``wait4`` reports them, which includes the children the command waited for
(strongroom's ``mke2fs`` and ``debugfs``). Bytes: strongroom's shipped VHD (``vhd_bytes`` from
its ``--json`` summary, checked against the file in DEST) and that file's allocation on disk;
restic's and borg's repository growth (file sizes, and allocation) over the backup; the
reference's ``ref.vhd`` size and allocation. For the change cycle, the shipped or added bytes
are set against the size of the changed files (the files rewritten, appended to or created,
whole) and against the bytes the change wrote.

Verification (not timed): after every strongroom cycle that shipped a VHD, the chain in DEST
is flattened with libvhdi (``pyvhdi``: the base opened, each child given its parent with
``set_parent``, the media read) into a sparse raw file, compared byte for byte with the local
metadata disk, and checked with ``e2fsck -fn``; after the change cycle a sample of the changed
paths is read back from the flattened file system with ``debugfs`` and compared with the tree.
A failure aborts the benchmark (exit status 1); a cycle with no change must ship nothing.

Conventions of the harness (``bench/harness/``), as in ``bench/files.py``: page cache warm
before every timed command (the tree, the tool's repository, cache or state folder, reading
only the data extents of sparse files, then ``sync``); progress on stderr, the report on
stdout; each command's output in ``WORKDIR/protect/logs/``; restic and borg installed with
``apt-get`` when missing (skipped, and said so, if that fails or with ``--no-install``).
strongroom runs as the console script next to this interpreter.

Usage::

    nice -n 10 python bench/protect.py [--size 1.0] [--quick] [--peers restic,borg] [--no-install]
                                       [--vhd-block-size SIZE] [--seed N] [--workdir DIR]
                                       [--keep] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import cli
from harness.checks import Failures
from harness.dataset import DatasetInfo, TextSource, describe_dataset, ensure_dataset
from harness.environment import head_markdown, head_text, machine
from harness.peers import Borg, Restic, Space, Tool, available, tool_env
from harness.report import finish
from harness.spawn import Measurement, log, run_measured, tail, version
from harness.stats import ratio
from harness.strongroom import strongroom_cmd, summary_json
from harness.tables import Table, md_table, plain_table, sentences
from harness.workspace import (
    GIB,
    KIB,
    MIB,
    PIECE,
    allocated,
    file_bytes,
    fresh_dir,
    fsync_seconds,
    iter_files,
    place_data,
    prepare,
    warm,
)

DEFAULT_GIB = 1.0
QUICK_GIB = 200 / 1024
NAME = "bench"  # the protected source's name: DEST holds bench-000000.vhd, ...
CHANGE_SHARE = 0.01
PEERS: dict[str, type[Tool]] = {"restic": Restic, "borg": Borg}

PHASES = ("first", "change", "nochange")
PHASE_LABELS = {"first": "first", "change": "1% change", "nochange": "no change"}
WHO_LABELS = {
    "strongroom": "strongroom protect",
    "restic": "restic backup",
    "borg": "borg create",
    "mke2fs": "mke2fs -t ext4 -d (ref)",
    "qemu-img": "qemu-img convert -O vpc (ref)",
    "reference": "mke2fs + qemu-img (ref)",
}


class Abort(Exception):
    """A verification failed or strongroom failed: the benchmark stops here."""


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One timed command (or, for ``reference``, the sum of the two reference commands)."""

    phase: str
    who: str
    seconds: float
    cpu_seconds: float
    peak_rss_kib: int
    exit_code: int
    ok: bool
    shipped: int | None = None  # bytes shipped (VHD file size) or added (repository growth)
    on_disk: int | None = None  # their allocation on disk
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rss_mib(self) -> float:
        return self.peak_rss_kib / 1024


@dataclass
class Change:
    """What ``change_tree`` did."""

    files_before: int = 0
    rewritten: list[str] = field(default_factory=list)
    appended: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    bytes_written: int = 0
    changed_bytes: int = 0  # final size of the files rewritten, appended to or created
    largest: int = 0  # size of the largest file whose content changed

    def counts(self) -> dict[str, int]:
        return {
            "rewritten": len(self.rewritten),
            "appended": len(self.appended),
            "renamed": len(self.renamed),
            "deleted": len(self.deleted),
            "created": len(self.created),
        }

    def describe(self) -> str:
        touched = len(self.rewritten) + len(self.appended) + len(self.renamed) + len(self.deleted)
        parts = ", ".join(f"{n} {what}" for what, n in self.counts().items())
        return (
            f"1% change: {touched} of {self.files_before} files touched ({parts}); changed "
            f"files {self.changed_bytes / 1e6:.1f} MB in all (largest {self.largest / 1e6:.1f} "
            f"MB), {self.bytes_written / 1e6:.2f} MB written"
        )


@dataclass
class Ctx:
    run: Path
    logs: Path
    data: Path
    sr: list[str]
    peers: list[Tool]
    keep: bool
    vhd_block_size: str | None = None  # --vhd-block-size for strongroom (None: its default)
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    change: Change | None = None
    disk_size: int = 0
    cycle: int = -1  # the last cycle strongroom shipped

    @property
    def state(self) -> Path:
        return self.run / "state"

    @property
    def dest(self) -> Path:
        return self.run / "dest"

    def space(self, tool: Tool) -> Space:
        return Space(self.run / tool.name, self.data, self.logs)

    def row(self, phase: str, who: str) -> Row | None:
        return next((r for r in self.rows if r.phase == phase and r.who == who), None)

    def sr_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["XDG_DATA_HOME"] = str(self.run / "xdg-data")
        env["XDG_CACHE_HOME"] = str(self.run / "xdg-cache")
        return env


# --------------------------------------------------------------------------- measuring


def timed(
    ctx: Ctx,
    phase: str,
    who: str,
    cmd: list[str],
    env: dict[str, str],
    warm_paths: Sequence[Path],
    ok_codes: frozenset[int] = frozenset({0}),
) -> Row:
    warm(warm_paths)
    stem = ctx.logs / f"{phase}-{who}"
    m = run_measured(cmd, env, ctx.run, stem)
    return record(ctx, phase, who, m, stem, ok_codes)


def record(
    ctx: Ctx, phase: str, who: str, m: Measurement, stem: Path, ok_codes: frozenset[int]
) -> Row:
    ok = m.exit_code in ok_codes
    row = Row(phase, who, m.seconds, m.cpu_seconds, m.peak_rss_kib, m.exit_code, ok)
    if m.exit_code != 0:
        row.note = f"exit code {m.exit_code}"
    if not ok:
        ctx.failures.append(
            f"{PHASE_LABELS[phase]} {who}: exit code {m.exit_code}\n"
            f"{tail(stem.with_suffix('.err'))}"
        )
    ctx.rows.append(row)
    log(
        f"  {PHASE_LABELS[phase]:<9} {WHO_LABELS[who]:<30} {m.seconds:8.2f} s "
        f"{m.cpu_seconds:7.2f} s CPU {m.peak_rss_kib / 1024:7.1f} MiB RSS"
        + ("" if ok else "  FAILED")
    )
    return row


def untimed(ctx: Ctx, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> bool:
    stem = ctx.logs / name
    m = run_measured(cmd, env, cwd, stem)
    if m.exit_code != 0:
        log(f"  {name}: exit code {m.exit_code}\n{tail(stem.with_suffix('.err'))}")
        return False
    return True


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


# --------------------------------------------------------------------------- the change


def _overwrite_regions(path: Path, rng: random.Random, regions: int, length: int) -> int:
    """Overwrite ``regions`` evenly spaced, 4 KiB-aligned regions in place (same size, inode)."""
    size = path.stat().st_size
    written = 0
    with path.open("r+b") as f:
        for i in range(regions):
            offset = int((i + 0.5) * size / regions) // (4 * KIB) * 4 * KIB
            f.seek(min(offset, size - length))
            written += f.write(rng.randbytes(length))
    return written


def change_tree(root: Path, seed: int, share: float = CHANGE_SHARE) -> Change:
    """Touch ``share`` of the regular files under ``root`` in place, deterministically."""
    rng = random.Random(f"protect:{seed}:change")
    text = TextSource(random.Random(f"protect:{seed}:change-text"), vocabulary=2000, lines=3000)
    files = [rel for rel, _ in iter_files(root)]
    out = Change(files_before=len(files))
    chosen = rng.sample(files, min(len(files), max(20, round(share * len(files)))))
    n_rewrite, n_append = round(0.40 * len(chosen)), round(0.30 * len(chosen))
    n_rename = round(0.15 * len(chosen))
    rewrite = chosen[:n_rewrite]
    append = chosen[n_rewrite : n_rewrite + n_append]
    rename = chosen[n_rewrite + n_append : n_rewrite + n_append + n_rename]
    delete = chosen[n_rewrite + n_append + n_rename :]
    folders = sorted({os.path.dirname(rel) for rel in files})

    for rel in rewrite:
        path = root / rel
        size = path.stat().st_size
        if size >= MIB:
            out.bytes_written += _overwrite_regions(path, rng, 4, 64 * KIB)
        else:
            with path.open("r+b") as f:
                out.bytes_written += f.write(text.text(rng, max(size, 512)))
        out.rewritten.append(rel)
    for rel in append:
        with (root / rel).open("ab") as f:
            out.bytes_written += f.write(text.text(rng, rng.randint(1 * KIB, 16 * KIB)))
        out.appended.append(rel)
    for i, rel in enumerate(rename):
        folder, name = os.path.split(rel)
        if i % 2:
            folder = rng.choice(folders)
            new = os.path.join(folder, f"moved-{i:03d}-{name}")
        else:
            stem, ext = os.path.splitext(name)
            new = os.path.join(folder, f"{stem}-renamed{ext}")
        os.rename(root / rel, root / new)
        out.renamed.append((rel, new))
    for rel in delete:
        (root / rel).unlink()
        out.deleted.append(rel)
    for i in range(max(5, round(0.15 * len(chosen)))):
        folder = rng.choice(folders) if i % 2 else "new-files"
        rel = os.path.join(folder, f"created-{i:03d}.txt")
        (root / folder).mkdir(parents=True, exist_ok=True)
        out.bytes_written += (root / rel).write_bytes(
            text.text(rng, rng.randint(1 * KIB, 64 * KIB))
        )
        out.created.append(rel)
    sizes = [(root / rel).stat().st_size for rel in out.rewritten + out.appended + out.created]
    out.changed_bytes, out.largest = sum(sizes), max(sizes, default=0)
    return out


# --------------------------------------------------------------------------- verification


def chain_files(dest: Path, cycle: int) -> list[Path]:
    return [dest / f"{NAME}-{i:06d}.vhd" for i in range(cycle + 1)]


def vhd_block_size(path: Path) -> int:
    """The block size in a dynamic or differencing VHD's header (the footer copy at the start
    says where the header is)."""
    with path.open("rb") as f:
        footer = f.read(512)
        f.seek(int.from_bytes(footer[16:24], "big"))
        header = f.read(1024)
    if footer[:8] != b"conectix" or header[:8] != b"cxsparse":
        raise Abort(f"{path}: not a dynamic or differencing VHD")
    return int.from_bytes(header[32:36], "big")


def flatten(chain: list[Path], local: Path, out: Path) -> tuple[int, list[int]]:
    """Write the disk of the chain's last VHD, as libvhdi reads it, to the sparse raw file
    ``out``; returns (disk size, offsets of the pieces that differ from ``local``).

    Reads go one VHD block at a time (at most 4 MiB): libvhdi 20260901 returns the parent's
    data for some blocks of a differencing disk when a single read spans several of its blocks
    (seen with 64 KiB and 256 KiB blocks; block by block it reads them right)."""
    import pyvhdi

    piece = min([PIECE, *(vhd_block_size(p) for p in chain)])
    opened: list[Any] = []
    differ: list[int] = []
    zeros = bytes(piece)
    try:
        for path in chain:
            f = pyvhdi.file()
            f.open(str(path))
            if opened:
                f.set_parent(opened[-1])
            opened.append(f)
        top = opened[-1]
        size = int(top.get_media_size())
        with out.open("wb") as raw, local.open("rb") as mine:
            pos = 0
            while pos < size:
                n = min(piece, size - pos)
                data = top.read_buffer_at_offset(n, pos)
                if len(data) != n:
                    raise Abort(f"libvhdi read {len(data)} of {n} bytes at {pos}")
                if data != os.pread(mine.fileno(), n, pos):
                    differ.append(pos)
                if data == (zeros if n == piece else bytes(n)):
                    raw.seek(n, os.SEEK_CUR)
                else:
                    raw.write(data)
                pos += n
            raw.truncate(size)
        return size, differ
    finally:
        for f in reversed(opened):
            f.close()


def _e2(name: str) -> str:
    for folder in (None, "/usr/sbin", "/sbin"):
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise SystemExit(f"{name} not found: install e2fsprogs")


def _quote(rel: str) -> bytes:
    word = ("/" + rel).encode()
    return b'"' + word.replace(b'"', b'""') + b'"'


def debugfs(image: Path, command: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "LC_ALL": "C"}
    argv = [_e2("debugfs").encode(), b"-R", command, bytes(image)]
    return subprocess.run(argv, capture_output=True, env=env, check=False)


def spot_check(image: Path, root: Path, change: Change, rng: random.Random) -> list[str]:
    """Read a sample of the changed paths back from the flattened file system."""
    problems: list[str] = []
    present = out_of = 0
    samples = rng.sample(change.rewritten, min(6, len(change.rewritten)))
    samples += rng.sample(change.appended, min(4, len(change.appended)))
    samples += rng.sample(change.created, min(3, len(change.created)))
    samples += [new for _, new in rng.sample(change.renamed, min(3, len(change.renamed)))]
    for rel in samples:
        out_of += 1
        got = debugfs(image, b"cat " + _quote(rel)).stdout
        if got != (root / rel).read_bytes():
            problems.append(f"{rel}: content in the chain differs from the tree")
        else:
            present += 1
    gone = rng.sample(change.deleted, min(3, len(change.deleted)))
    gone += [old for old, _ in rng.sample(change.renamed, min(3, len(change.renamed)))]
    for rel in gone:
        out_of += 1
        done = debugfs(image, b"stat " + _quote(rel))
        if b"not found" not in done.stderr:
            problems.append(f"{rel}: still in the chain's file system")
        else:
            present += 1
    if not problems:
        log(f"    debugfs spot check: {present}/{out_of} changed paths as in the tree")
    return problems


def verify_chain(ctx: Ctx, cycle: int, change: Change | None, seed: int, when: str = "") -> None:
    """Flatten DEST's chain up to ``cycle``, compare it with the metadata disk, e2fsck it;
    raise Abort on any problem."""
    t0 = time.perf_counter()
    chain = chain_files(ctx.dest, cycle)
    missing = [p.name for p in chain if not p.is_file()]
    if missing:
        raise Abort(f"cycle {cycle}: chain incomplete in {ctx.dest}: missing {missing}")
    flat = ctx.run / "flat.raw"
    try:
        size, differ = flatten(chain, ctx.state / "meta.vhd", flat)
        if differ:
            where = ", ".join(f"{p:#x}" for p in differ[:5])
            raise Abort(
                f"cycle {cycle}: the flattened chain differs from the local metadata disk in "
                f"{len(differ)} VHD blocks (first at {where})"
            )
        fsck = subprocess.run(
            [_e2("e2fsck"), "-fn", str(flat)],
            capture_output=True,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
        if fsck.returncode != 0:
            report = (fsck.stdout + fsck.stderr).decode(errors="replace").strip()
            raise Abort(f"cycle {cycle}: e2fsck -fn of the flattened chain failed:\n{report}")
        if change is not None:
            problems = spot_check(flat, ctx.data, change, random.Random(f"protect:{seed}:check"))
            if problems:
                raise Abort(f"cycle {cycle}: " + "; ".join(problems[:5]))
    finally:
        if ctx.keep and flat.exists():
            flat.replace(ctx.run / f"flat-{cycle:06d}.raw")
        else:
            flat.unlink(missing_ok=True)
    what = f"cycle {cycle}{when}: chain of {len(chain)} VHD(s), {size / GIB:g} GiB disk"
    ctx.verified.append(f"{what}: equals the metadata disk, e2fsck -fn clean")
    log(f"    verified {what} ({time.perf_counter() - t0:.1f} s, not timed)")


# --------------------------------------------------------------------------- the commands


def strongroom_cycle(ctx: Ctx, phase: str) -> Row:
    cmd = [*ctx.sr, "protect", str(ctx.data), "--to", str(ctx.dest)]
    cmd += ["--state", str(ctx.state), "--name", NAME, "--json"]
    if ctx.vhd_block_size:
        cmd += ["--vhd-block-size", ctx.vhd_block_size]
    row = timed(ctx, phase, "strongroom", cmd, ctx.sr_env(), [ctx.data, ctx.state])
    if not row.ok:
        raise Abort(f"strongroom protect failed in the {PHASE_LABELS[phase]} cycle")
    summary = summary_json(ctx.logs / f"{phase}-strongroom")
    if not summary:
        raise Abort(f"strongroom protect printed no summary in the {PHASE_LABELS[phase]} cycle")
    row.details = summary
    ctx.disk_size = int(summary.get("disk_size") or ctx.disk_size)
    cycle = summary.get("cycle")
    state = allocated(ctx.state)
    row.details["state_allocated"] = state
    if cycle is None:
        shipped = sorted(p.name for p in ctx.dest.glob(f"{NAME}-*.vhd"))
        if len(shipped) != ctx.cycle + 1:
            raise Abort(f"a cycle without changes shipped something: {shipped}")
        row.shipped, row.on_disk = 0, 0
        row.note = f"nothing shipped; in the command {summary.get('seconds')} s"
        return row
    vhd = ctx.dest / f"{NAME}-{int(cycle):06d}.vhd"
    if not vhd.is_file():
        raise Abort(f"cycle {cycle}: {vhd} was not shipped")
    row.shipped, row.on_disk = vhd.stat().st_size, allocated(vhd)
    if row.shipped != summary.get("vhd_bytes"):
        ctx.failures.append(
            f"cycle {cycle}: vhd_bytes {summary.get('vhd_bytes')} != {vhd} size {row.shipped}"
        )
    ctx.cycle = int(cycle)
    changes = summary.get("changes") or {}
    what = ", ".join(f"{n} {k}" for k, n in changes.items() if n) or "nothing"
    row.note = (
        f"cycle {cycle}: {what}; {summary.get('bytes_changed', 0) / 1e6:.1f} MB of disk "
        f"changed, {summary.get('vhd_allocated_blocks')} VHD blocks; in the command "
        f"{summary.get('seconds')} s; state {state / 1e6:.0f} MB"
    )
    return row


def peer_init(ctx: Ctx, tool: Tool) -> bool:
    space = ctx.space(tool)
    shutil.rmtree(space.root, ignore_errors=True)
    space.cache.mkdir(parents=True)
    if untimed(ctx, f"init-{tool.name}", tool.init(space), tool_env(tool, space), space.root):
        return True
    ctx.skipped.append(f"{tool.name}: init failed (see {ctx.logs}/init-{tool.name}.err)")
    return False


def peer_backup(ctx: Ctx, tool: Tool, phase: str) -> Row:
    space = ctx.space(tool)
    before, before_alloc = file_bytes(space.repo), allocated(space.repo)
    cmd = tool.backup(space, phase)
    env = tool_env(tool, space)
    row = timed(ctx, phase, tool.name, cmd, env, [ctx.data, space.repo, space.cache], tool.ok_codes)
    row.shipped = file_bytes(space.repo) - before
    row.on_disk = allocated(space.repo) - before_alloc
    cache = allocated(space.cache)
    row.details = {"repo_bytes": file_bytes(space.repo), "cache_allocated": cache}
    row.note = f"repository {row.details['repo_bytes'] / 1e6:.0f} MB, cache {cache / 1e6:.0f} MB"
    if row.exit_code not in (0,):
        row.note += f"; exit code {row.exit_code}"
    return row


def reference(ctx: Ctx) -> None:
    """The hand-made equivalent of the first cycle: mke2fs -d, then qemu-img convert to VHD."""
    image, vhd = ctx.run / "ref.img", ctx.run / "ref.vhd"
    cmd = [_e2("mke2fs"), "-t", "ext4", "-d", str(ctx.data), str(image), f"{ctx.disk_size // KIB}k"]
    made = timed(ctx, "first", "mke2fs", cmd, dict(os.environ), [ctx.data])
    made.shipped, made.on_disk = file_bytes(image), allocated(image)
    made.note = f"ref.img {made.shipped / GIB:g} GiB sparse raw, {made.on_disk / 1e6:.0f} MB alloc"
    rows = [made]
    if shutil.which("qemu-img") is None:
        ctx.skipped.append("qemu-img: not installed (apt-get install qemu-utils); no VHD reference")
    elif made.ok:
        cmd = ["qemu-img", "convert", "-O", "vpc", "-o", "subformat=dynamic", str(image), str(vhd)]
        conv = timed(ctx, "first", "qemu-img", cmd, dict(os.environ), [image])
        if conv.ok:
            conv.shipped, conv.on_disk = file_bytes(vhd), allocated(vhd)
            flush = fsync_seconds(vhd)
            conv.details["fsync_seconds"] = flush
            conv.note = f"not fsynced (an fsync after it: {flush:.2f} s)"
        rows.append(conv)
    total = Row(
        "first",
        "reference",
        sum(r.seconds for r in rows),
        sum(r.cpu_seconds for r in rows),
        max(r.peak_rss_kib for r in rows),
        max(r.exit_code for r in rows),
        all(r.ok for r in rows),
        rows[-1].shipped,
        rows[-1].on_disk,
        "sum of the two; RSS the larger" if len(rows) == 2 else "mke2fs only",
    )
    ctx.rows.append(total)
    if not ctx.keep:
        image.unlink(missing_ok=True)
        vhd.unlink(missing_ok=True)


def run_all(ctx: Ctx, seed: int) -> None:
    ctx.peers = [t for t in ctx.peers if peer_init(ctx, t)]
    log("first cycle / first backup")
    strongroom_cycle(ctx, "first")
    verify_chain(ctx, ctx.cycle, None, seed)
    for tool in ctx.peers:
        peer_backup(ctx, tool, "first")
    reference(ctx)

    change = ctx.change = change_tree(ctx.data, seed)
    time.sleep(1.5)  # let the changed files' ctimes age (files caches skip racy timestamps)
    log(change.describe())
    strongroom_cycle(ctx, "change")
    verify_chain(ctx, ctx.cycle, change, seed)
    for tool in ctx.peers:
        peer_backup(ctx, tool, "change")

    log("no-change cycle / backup")
    strongroom_cycle(ctx, "nochange")
    # Nothing shipped: the local disk must not have moved either.
    verify_chain(ctx, ctx.cycle, None, seed, " (after the no-change cycle)")
    for tool in ctx.peers:
        peer_backup(ctx, tool, "nochange")


# --------------------------------------------------------------------------- report


PHASE_HEADER = ["phase", "command", "s", "CPU s", "peak RSS MiB", "shipped MB", "on disk MB"]
PHASE_ALIGN = "llrrrrr"


def phase_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if not r.ok:
            cells = ["FAILED", f"{r.cpu_seconds:.2f}", "", "", ""]
        else:
            cells = [
                f"{r.seconds:.2f}",
                f"{r.cpu_seconds:.2f}",
                f"{r.rss_mib:.1f}",
                _mb(r.shipped),
                _mb(r.on_disk),
            ]
        out.append([PHASE_LABELS[r.phase], WHO_LABELS[r.who], *cells])
    return out


def note_lines(rows: list[Row]) -> list[str]:
    return [f"{PHASE_LABELS[r.phase]}, {WHO_LABELS[r.who]}: {r.note}" for r in rows if r.note]


def compute_ratios(ctx: Ctx) -> dict[str, dict[str, float | None]]:
    """metric -> peer -> strongroom / peer (lower is better for every metric)."""
    peers = [t.name for t in ctx.peers] + ["reference"]
    out: dict[str, dict[str, float | None]] = {}
    for phase in PHASES:
        mine = ctx.row(phase, "strongroom")
        if mine is None or not mine.ok:
            continue
        metrics = {"time": "seconds", "CPU time": "cpu_seconds", "peak RSS": "peak_rss_kib"}
        if phase != "nochange":
            metrics.update({"bytes shipped / added": "shipped", "bytes on disk": "on_disk"})
        for name, attr in metrics.items():
            ratios: dict[str, float | None] = {}
            for peer in peers:
                theirs = ctx.row(phase, peer)
                if theirs is not None and theirs.ok:
                    ratios[peer] = ratio(getattr(mine, attr), getattr(theirs, attr))
            if ratios:
                out[f"{PHASE_LABELS[phase]}: {name}"] = ratios
    return out


def ratio_rows(ratios: dict[str, dict[str, float | None]], peers: list[str]) -> list[list[str]]:
    rows = []
    for metric, values in ratios.items():
        cells = []
        for p in peers:
            v = values.get(p)
            cells.append("-" if v is None else f"{v:.2f}x")
        rows.append([metric, *cells])
    return rows


def amplification(ctx: Ctx, change: Change | None) -> tuple[list[str], list[list[str]]]:
    """The change phase's bytes shipped or added against the changed files and bytes written."""
    tools = ["strongroom", *(t.name for t in ctx.peers)]
    header = ["1% change: bytes", *tools]
    rows: dict[str, list[str]] = {
        "shipped / added MB": [],
        "on disk MB": [],
        f"/ changed files ({_mb(change.changed_bytes if change else None)} MB)": [],
        f"/ bytes written ({_mb(change.bytes_written if change else None)} MB)": [],
    }
    for who in tools:
        r = ctx.row("change", who)
        ok = r is not None and r.ok and change is not None
        shipped = r.shipped if ok and r is not None else None
        rows["shipped / added MB"].append(_mb(shipped))
        rows["on disk MB"].append(_mb(r.on_disk if ok and r is not None else None))
        for key, base in zip(
            list(rows)[2:],
            (change.changed_bytes, change.bytes_written) if change else (0, 0),
            strict=True,
        ):
            v = ratio(shipped, base)
            rows[key].append("-" if v is None else f"{v:.2f}x")
    mine = ctx.row("change", "strongroom")
    if mine is not None and mine.ok and mine.details.get("bytes_changed"):
        undo = int(mine.details["bytes_changed"])
        cells = [f"{undo / 1e6:.1f}", *("" for _ in ctx.peers)]
        rows["disk bytes changed (undo keys) MB"] = cells
        rows["VHD / disk bytes changed"] = [
            f"{(mine.shipped or 0) / undo:.2f}x",
            *("" for _ in ctx.peers),
        ]
    return header, [[k, *v] for k, v in rows.items()]


def environment(ctx: Ctx, workdir: Path) -> dict[str, object]:
    try:
        import pyvhdi

        libvhdi = f"libvhdi {pyvhdi.get_version()}"
    except ImportError:
        libvhdi = "libvhdi: not installed"
    versions: dict[str, str] = {"strongroom": version([*ctx.sr, "--version"])}
    versions.update({t.name: t.version() for t in ctx.peers})
    mke2fs = subprocess.run([_e2("mke2fs"), "-V"], capture_output=True, text=True, check=False)
    versions["mke2fs"] = (mke2fs.stderr or mke2fs.stdout).strip().splitlines()[0]
    versions["qemu-img"] = version(["qemu-img", "--version"])
    versions["libvhdi"] = libvhdi
    env = machine(workdir, versions)
    env["strongroom_command"] = " ".join(ctx.sr)
    return env


PREAMBLE = (
    "page cache warm before every command (tree, repository/cache/state folder read, sparse "
    "files by their data extents, then sync); one run",
    "wall time (s) of the whole command, interpreter start-up included; CPU and peak RSS as "
    "wait4 reports them, so strongroom's include mke2fs and debugfs, its children",
    "shipped MB: strongroom's VHD in DEST, the reference's ref.vhd (ref.img for mke2fs); for "
    "restic and borg the repository's growth; on disk: the same, allocated",
)


@dataclass
class Report:
    env: dict[str, object]
    info: DatasetInfo
    change: Change | None
    ctx: Ctx

    def peers(self) -> list[str]:
        return [t.name for t in self.ctx.peers] + ["reference"]

    def preamble(self) -> list[str]:
        lines = describe_dataset(self.info)[:1]
        if self.ctx.disk_size:
            block = self.ctx.vhd_block_size or "2M, the default"
            lines.append(
                f"metadata disk: {self.ctx.disk_size / GIB:g} GiB ext4 (strongroom's default "
                f"size; the reference uses the same); shipped VHD block size {block}"
            )
        if self.change is not None:
            lines.append(self.change.describe())
        return [*lines, *PREAMBLE]


def result_tables(r: Report, table: Table) -> list[str]:
    """The ratio and amplification tables, drawn by `table` (plain or markdown)."""
    out: list[str] = []
    ratios = compute_ratios(r.ctx)
    if ratios:
        header = ["strongroom / peer (lower: strongroom better)", *r.peers()]
        align = "l" + "r" * len(r.peers())
        out += ["", table(header, ratio_rows(ratios, r.peers()), align)]
    header, rows = amplification(r.ctx, r.change)
    out += ["", table(header, rows, "l" + "r" * (len(header) - 1))]
    return out


def report_text(r: Report) -> str:
    ctx = r.ctx
    out = [
        *head_text(r.env),
        *r.preamble(),
        "",
        plain_table(PHASE_HEADER, phase_rows(ctx.rows), PHASE_ALIGN),
        "",
        "notes:",
        *(f"  {line}" for line in note_lines(ctx.rows)),
    ]
    out += result_tables(r, plain_table)
    out += ["", *(f"verified {v}" for v in ctx.verified)]
    out += [f"skipped: {s}" for s in ctx.skipped]
    if ctx.failures:
        out += ["", "failures:", *(f"  {f}" for f in ctx.failures)]
    return "\n".join(out)


def report_markdown(r: Report) -> str:
    ctx = r.ctx
    out = [
        head_markdown(r.env),
        "",
        sentences(r.preamble()),
        "",
        md_table(PHASE_HEADER, phase_rows(ctx.rows), PHASE_ALIGN),
        "",
        *(f"- {line}" for line in note_lines(ctx.rows)),
    ]
    out += result_tables(r, md_table)
    out += ["", *(f"Verified {v}." for v in ctx.verified)]
    out += [f"Skipped: {s}." for s in ctx.skipped]
    if ctx.failures:
        out += ["", "Failures: " + "; ".join(f.splitlines()[0] for f in ctx.failures)]
    return "\n".join(out)


def json_doc(r: Report) -> dict[str, Any]:
    dataset = r.info.to_json()
    dataset.pop("source_manifest", None)
    change = None
    if r.change is not None:
        change = {
            "files_before": r.change.files_before,
            "counts": r.change.counts(),
            "bytes_written": r.change.bytes_written,
            "changed_bytes": r.change.changed_bytes,
            "largest": r.change.largest,
        }
    doc = {
        "environment": r.env,
        "dataset": dataset,
        "change": change,
        "rows": [asdict(row) for row in r.ctx.rows],
        "ratios": compute_ratios(r.ctx),
        "verified": r.ctx.verified,
        "skipped": r.ctx.skipped,
        "failures": r.ctx.failures,
    }
    return doc


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--size", type=float, default=DEFAULT_GIB, help="tree size in GiB (default 1)")
    p.add_argument("--quick", action="store_true", help="sanity preset: a 200 MiB tree")
    p.add_argument("--peers", default="restic,borg", help="peers to run: restic,borg or none")
    p.add_argument(
        "--no-install", action="store_true", help="skip missing peers (no apt-get install)"
    )
    p.add_argument(
        "--vhd-block-size", metavar="SIZE", help="passed to strongroom protect (default: its own)"
    )
    cli.add_common(
        p, seed_help="data and change seed", keep_help="keep the run directory (tree, chains)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.size = QUICK_GIB
    names = [] if args.peers.strip() == "none" else args.peers.split(",")
    args.peers = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in args.peers if n not in PEERS]
    if unknown:
        p.error(f"unknown peer(s): {', '.join(unknown)}; choose from {', '.join(PEERS)} or none")
    if args.size <= 0:
        p.error("--size must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = int(args.size * GIB)
    base = prepare(args.workdir, "protect", 9 * size)
    try:
        import pyvhdi  # noqa: F401  (the chain is verified with it)
    except ImportError:
        raise SystemExit("pyvhdi is not installed: pip install libvhdi-python") from None
    for tool in ("mke2fs", "debugfs", "e2fsck"):
        _e2(tool)
    peers, skipped = available([PEERS[n]() for n in args.peers], not args.no_install)

    info = ensure_dataset(base / "cache" / f"dataset-{size // MIB}M", size, args.seed)
    for line in describe_dataset(info):
        log(line)
    logs = fresh_dir(base / "logs")
    run = fresh_dir(base / "run")
    ctx = Ctx(run, logs, run / "data", strongroom_cmd(), peers, args.keep, args.vhd_block_size)
    ctx.skipped = skipped
    place_data(base / "cache" / f"dataset-{size // MIB}M", ctx.data)
    env = environment(ctx, base)
    try:
        run_all(ctx, args.seed)
    except Abort as exc:
        ctx.failures.append(f"aborted: {exc}")
        log(f"ABORTED: {exc}")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        ctx.failures.append(f"benchmark error: {exc}")
    if args.keep:
        log(f"  kept {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)

    report = Report(env, info, ctx.change, ctx)
    text = report_markdown(report) if args.markdown else report_text(report)
    return finish(text, json_doc(report), args.json, logs, Failures(ctx.failures))


if __name__ == "__main__":
    sys.exit(main())
