"""Verifying a repository: structure always, and every byte with `read_data`.

Structure: every index file matches its name, decrypts and parses; every
indexed pack exists and is large enough; every object under data/, index/,
keys/ and points/ is named as strongroom names it (a foreign one is reported);
packs that no index names are reported as a warning (leftovers of a killed
backup: harmless, prune removes them). Data: each selected pack is read once,
sequentially, never whole in memory: its bytes hash to its name, its header
(read by itself from the pack's end) authenticates and agrees with the index,
and every chunk decrypts, decompresses within its declared size and hashes to
its id. Findings name the object, the pack and the chunk.

Packs are verified on `jobs` threads (decryption, decompression and BLAKE3
release the GIL for the chunk sizes packs hold; docs/performance.md,
"Restore and check on both cores"), each into its own partial report; the
partial reports are merged in pack order, so the findings, their order and
the counts are the same whatever the number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from strongroom.errors import IntegrityError, ObjectNotFound, StorageError, StrongroomError
from strongroom.repository import format as fmt
from strongroom.repository.entries import PackedChunk
from strongroom.repository.format import BlobType
from strongroom.repository.index_files import entries_by_pack
from strongroom.repository.pack import PackEntry, PackScan, blob_ad, read_stored_header
from strongroom.repository.repo import MAX_CHUNK_SIZE, Repository
from strongroom.types import Progress, no_progress

# A sealed chunk is its compressed payload plus flag, nonce and tag; zstd's
# worst case adds a little over the raw size.
_SEAL_SLACK = 64 * 1024


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged_chunks: dict[bytes, str] = field(default_factory=dict)  # chunk id -> pack hex
    packs: dict[bytes, list[PackedChunk]] = field(default_factory=dict)
    pack_sizes: dict[bytes, int] = field(default_factory=dict)
    packs_read: int = 0
    chunks_read: int = 0
    trees_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def chunk_info(self) -> Callable[[bytes], tuple[int, int] | None]:
        """chunk id -> (raw length, blob type) from the index files read."""
        table = {e[0]: (e[3], e[4]) for entries in self.packs.values() for e in entries}
        return table.get


def check_structure(repo: Repository, report: CheckReport) -> None:
    # Index first, packs second: a backup running meanwhile writes packs before
    # the index that names them, so this order never sees an indexed pack missing.
    # Damaged index files go to repo.damage.
    report.packs = entries_by_pack(repo.current_index_files().values())
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
    repo.list_keys()  # damaged or foreign key files go to repo.damage


def report_damage(repo: Repository, report: CheckReport) -> None:
    """Every damaged or foreign object met during the check is an error."""
    for name in sorted(repo.damage.found):
        report.errors.append(repo.damage.found[name])


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
    repo: Repository, pack: bytes, entries: list[PackedChunk], report: CheckReport
) -> None:
    """Read one pack in one sequential pass and verify it; record findings in `report`.

    Reads only `report.pack_sizes` and writes only to `report`: workers give
    each pack its own report (`_check_one`)."""
    name = fmt.pack_name(pack.hex())
    short = pack.hex()[:16]
    size = report.pack_sizes.get(pack)
    if size is None:
        return  # reported by the structure check

    def read(offset: int, length: int) -> bytes:
        return repo.backend.get_range(name, offset, length)

    try:
        header_list = read_stored_header(read, size, repo.sealer, f"pack {short}")
        header: dict[bytes, PackEntry] = {e.chunk_id: e for e in header_list}
    except ObjectNotFound:
        return  # removed meanwhile (a prune)
    except IntegrityError as err:
        report.errors.append(str(err))
        header = {}
    report.packs_read += 1
    scan = PackScan(read, size)
    by_offset = {(off, length): (cid, raw, btype) for cid, off, length, raw, btype in entries}
    for off, length, sealed in scan.ranges(list(by_offset)):
        cid, raw, btype = by_offset[(off, length)]
        report.chunks_read += 1
        what = f"chunk {cid.hex()[:16]} in pack {short}"
        h = header.get(cid)
        if header and (h is None or (h.offset, h.length) != (off, length)):
            report.errors.append(f"{what}: index and pack header disagree")
        try:
            blob_type = BlobType(btype)
            if sealed is None:
                raise IntegrityError(f"{what} lies beyond the pack's end")
            if raw > MAX_CHUNK_SIZE[blob_type] or length > raw + _SEAL_SLACK:
                raise IntegrityError(f"{what}: the index gives impossible sizes")
            payload = repo.sealer.open(sealed, blob_ad(cid, blob_type), what)
            data = repo.compressor.unpack(payload, raw)
            if len(data) != raw:
                raise IntegrityError(f"{what}: {len(data)} bytes, the index says {raw}")
            if repo.chunk_id(data) != cid:
                raise IntegrityError(f"{what}: content does not hash to its id")
        except (IntegrityError, ValueError) as err:
            report.errors.append(str(err) if isinstance(err, IntegrityError) else f"{what}: {err}")
            report.damaged_chunks[cid] = pack.hex()
    try:
        digest = scan.digest()
    except (ObjectNotFound, StorageError) as err:
        report.errors.append(f"pack {short}: {err}")
        return
    if scan.short:
        report.errors.append(f"pack {short} is shorter than listed (changed while read?)")
    elif digest != pack:
        report.errors.append(f"pack {short}: content does not match its name (damaged)")


def _check_one(
    repo: Repository, pack: bytes, entries: list[PackedChunk], size: int | None
) -> CheckReport:
    """One pack's findings in a report of their own; a retryable storage error
    propagates (the whole check is worth retrying), any other is a finding."""
    part = CheckReport()
    if size is not None:
        part.pack_sizes[pack] = size
    try:
        check_pack_data(repo, pack, entries, part)
    except StrongroomError as err:
        if isinstance(err, StorageError) and err.retryable:
            raise
        part.errors.append(f"pack {pack.hex()[:16]}: {err}")
    return part


def _merge(report: CheckReport, part: CheckReport) -> None:
    report.errors += part.errors
    report.damaged_chunks.update(part.damaged_chunks)
    report.packs_read += part.packs_read
    report.chunks_read += part.chunks_read


def check_data(
    repo: Repository,
    report: CheckReport,
    subset: str | None = None,
    progress: Callable[[Progress], None] = no_progress,
    jobs: int = 1,
) -> None:
    """Verify the bytes of every selected pack (all, or `subset`) on `jobs`
    threads (1: in the calling thread), and merge the findings in pack order."""
    chosen = select_packs(list(report.packs), subset)
    prog = Progress(job="check", files_total=len(chosen), unit="pack")
    prog.bytes_total = sum(report.pack_sizes.get(p, 0) for p in chosen)

    def one(pack: bytes) -> CheckReport:
        return _check_one(repo, pack, report.packs[pack], report.pack_sizes.get(pack))

    def merged(parts: Iterator[CheckReport]) -> None:
        for pack, part in zip(chosen, parts, strict=True):
            _merge(report, part)
            prog.files_done += 1
            prog.bytes_done += report.pack_sizes.get(pack, 0)
            progress(prog)

    if jobs <= 1 or len(chosen) <= 1:
        merged(one(pack) for pack in chosen)
        return
    pool = ThreadPoolExecutor(jobs, thread_name_prefix="check")
    try:
        merged(pool.map(one, chosen))
    finally:  # on an error or an interrupt: nothing more starts, none is left running
        pool.shutdown(wait=True, cancel_futures=True)
