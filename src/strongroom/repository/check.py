"""Verifying a repository: structure always, and every byte with `read_data`.

Structure: every index file decrypts and parses; every indexed pack exists and
is large enough; packs that no index names are reported (leftovers of a killed
backup: harmless, prune removes them). Data: each selected pack's bytes hash to
its name, its header authenticates, and every chunk decrypts, decompresses and
hashes to its id. Findings name the pack and the chunk.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from strongroom.errors import IntegrityError, ObjectNotFound, StrongroomError
from strongroom.repository import format as fmt
from strongroom.repository.crypto import content_hash
from strongroom.repository.format import BlobType
from strongroom.repository.pack import blob_ad, read_pack_header
from strongroom.repository.repo import Repository
from strongroom.types import Progress, no_progress

Entry = tuple[bytes, int, int, int, int]  # chunk id, offset, length, raw, type


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged_chunks: dict[bytes, str] = field(default_factory=dict)  # chunk id -> pack hex
    packs: dict[bytes, list[Entry]] = field(default_factory=dict)
    pack_sizes: dict[bytes, int] = field(default_factory=dict)
    packs_read: int = 0
    chunks_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_structure(repo: Repository, report: CheckReport) -> None:
    # Index first, packs second: a backup running meanwhile writes packs before
    # the index that names them, so this order never sees an indexed pack missing.
    for name in repo.list_index_files():
        try:
            idx = repo.read_index_file(name)
        except StrongroomError as err:
            report.errors.append(f"index file {name}: {err}")
            continue
        for cid, pack, off, length, raw, btype in idx.iter_entries():
            report.packs.setdefault(pack, []).append((cid, off, length, raw, int(btype)))
    report.pack_sizes = repo.list_packs()
    copies = {
        e[0] for p, entries in report.packs.items() if p in report.pack_sizes for e in entries
    }
    for pack, entries in report.packs.items():
        size = report.pack_sizes.get(pack)
        if size is None:
            lost = [e[0] for e in entries if e[0] not in copies]
            report.errors.append(
                f"pack {pack.hex()} is in the index but missing from storage "
                f"({len(lost)} of its {len(entries)} chunks have no other copy; "
                "'strongroom repair index' drops it from the index)"
            )
            for cid in lost:
                report.damaged_chunks[cid] = pack.hex()
            continue
        end = max(off + length for _, off, length, _, _ in entries)
        if end > size:
            report.errors.append(
                f"pack {pack.hex()} is truncated ({size} bytes, index needs {end})"
            )
            for e in entries:
                if e[1] + e[2] > size:
                    report.damaged_chunks[e[0]] = pack.hex()
    orphans = [p for p in report.pack_sizes if p not in report.packs]
    if orphans:
        report.warnings.append(
            f"{len(orphans)} packs are not indexed (left by an interrupted backup; "
            "'strongroom prune' removes them)"
        )


def select_packs(packs: list[bytes], subset: str | None, seed: int | None = None) -> list[bytes]:
    """All packs, or `n/m` (the n-th of m groups by id), or `P%` (a random sample)."""
    ordered = sorted(packs)
    if not subset:
        return ordered
    if subset.endswith("%"):
        fraction = float(subset[:-1]) / 100
        if not 0 < fraction <= 1:
            raise ValueError("percentage must be in (0, 100]")
        count = max(1, round(len(ordered) * fraction)) if ordered else 0
        return sorted(random.Random(seed).sample(ordered, count))
    n, m = (int(x) for x in subset.split("/"))
    if not 1 <= n <= m:
        raise ValueError("subset n/m needs 1 <= n <= m")
    return [p for p in ordered if int.from_bytes(p[:8], "big") % m == n - 1]


def check_pack_data(
    repo: Repository, pack: bytes, entries: list[Entry], report: CheckReport
) -> None:
    """Read one pack fully and verify it; record findings in `report`."""
    name = fmt.pack_name(pack.hex())
    short = pack.hex()[:16]
    try:
        blob = repo.backend.get(name)
    except ObjectNotFound:
        return  # reported by the structure check
    report.packs_read += 1
    if content_hash(blob) != pack:
        report.errors.append(f"pack {short}: content does not match its name (damaged)")
    try:
        header = {e.chunk_id: e for e in read_pack_header(blob, repo.sealer, f"pack {short}")}
    except IntegrityError as err:
        report.errors.append(str(err))
        header = {}
    for cid, off, length, raw, btype in entries:
        report.chunks_read += 1
        what = f"chunk {cid.hex()[:16]} in pack {short}"
        h = header.get(cid)
        if header and (h is None or (h.offset, h.length) != (off, length)):
            report.errors.append(f"{what}: index and pack header disagree")
        try:
            sealed = blob[off : off + length]
            payload = repo.sealer.open(sealed, blob_ad(cid, BlobType(btype)), what)
            data = repo.compressor.unpack(payload, raw)
            if repo.chunk_id(data) != cid:
                raise IntegrityError(f"{what}: content does not hash to its id")
        except IntegrityError as err:
            report.errors.append(str(err))
            report.damaged_chunks[cid] = pack.hex()


def check_data(
    repo: Repository,
    report: CheckReport,
    subset: str | None = None,
    progress: Callable[[Progress], None] = no_progress,
) -> None:
    chosen = select_packs(list(report.packs), subset)
    prog = Progress(job="check", files_total=len(chosen))
    prog.bytes_total = sum(report.pack_sizes.get(p, 0) for p in chosen)
    for pack in chosen:
        check_pack_data(repo, pack, report.packs[pack], report)
        prog.files_done += 1
        prog.bytes_done += report.pack_sizes.get(pack, 0)
        progress(prog)
