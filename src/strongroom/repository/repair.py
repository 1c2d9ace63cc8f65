"""Repairing the index and damaged packs (docs/design.md 5a). Exclusive lock.

`rebuild_index` writes a new index from the packs that exist: entries naming
missing packs are dropped, packs that no index names are added from their
headers, and packs whose header cannot be read are skipped and reported.
`salvage_packs` copies every chunk of a damaged pack that still authenticates
into new packs, moves the damaged pack to `quarantine/`, and names the chunks
that are lost.

Write order, as in prune (so an interruption at any point is harmless and the
command can simply be run again): new packs, then the new index files, then
(after checking our lock still holds) the old index files are deleted, and
packs last. Until the old index files are gone, old and new both resolve;
readers that see both ignore duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from strongroom.errors import IntegrityError, ObjectNotFound, StorageError
from strongroom.repository import format as fmt
from strongroom.repository.crypto import OVERHEAD, content_hash
from strongroom.repository.entries import PackedChunk
from strongroom.repository.format import BlobType
from strongroom.repository.index_files import delete_object, entries_by_pack, write_index_files
from strongroom.repository.pack import (
    ENTRY_SIZE,
    MAGIC,
    MAX_PACK_SIZE,
    TRAILER_SIZE,
    PackEntry,
    blob_ad,
    header_length,
    parse_header,
    read_pack_header,
)
from strongroom.repository.repo import MAX_CHUNK_SIZE, Repository
from strongroom.storage.base import get_bounded

Report = Callable[[str], None]
QUARANTINE_PREFIX = "quarantine/"


def quarantine_name(pack_hex: str) -> str:
    return f"{QUARANTINE_PREFIX}{pack_hex}"


@dataclass
class IndexRepair:
    """What `rebuild_index` found and did; pack ids as hex."""

    packs_indexed: int = 0
    packs_added: list[str] = field(default_factory=list)  # in no index before
    packs_missing: list[str] = field(default_factory=list)  # indexed, not in storage
    packs_damaged: dict[str, str] = field(default_factory=dict)  # header unreadable -> why
    entries_dropped: int = 0
    index_files_written: int = 0
    index_files_removed: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def read_header(repo: Repository, pack: bytes, size: int) -> list[PackEntry]:
    """A pack's header by ranged reads (magic, trailer, header), bounds-checked
    like `read_pack_header`; IntegrityError if it cannot be trusted."""
    name = fmt.pack_name(pack.hex())
    what = f"pack {pack.hex()[:16]}"
    if size < len(MAGIC) + TRAILER_SIZE:
        raise IntegrityError(f"{what} is too short to be a pack")
    if repo.backend.get_range(name, 0, len(MAGIC)) != MAGIC:
        raise IntegrityError(f"{what} does not start with the pack magic")
    tail = repo.backend.get_range(name, size - TRAILER_SIZE, TRAILER_SIZE)
    hlen = header_length(tail, size, what)
    end = size - TRAILER_SIZE
    sealed = repo.backend.get_range(name, end - hlen, hlen)
    if len(sealed) != hlen:
        raise IntegrityError(f"{what} is truncated")
    entries = parse_header(sealed, repo.sealer, what)
    for e in entries:
        if e.offset < len(MAGIC) or e.offset + e.length > end - hlen:
            raise IntegrityError(f"{what}: chunk {e.chunk_id.hex()[:16]} lies outside the pack")
    return entries


def rebuild_index(
    repo: Repository,
    *,
    read_all_packs: bool = False,
    exclude: Iterable[bytes] = (),
    report: Report = lambda _: None,
) -> IndexRepair:
    """Write a new index of the packs in storage, then delete the old index files.

    Packs the old index describes keep its entries (bounded by the pack's
    size) unless `read_all_packs`; every other pack's header is read. Packs in
    `exclude` (quarantined by `salvage_packs`) are left out."""
    result = IndexRepair()
    skip = set(exclude)
    old_names = repo.list_index_files()
    old = entries_by_pack(repo.current_index_files().values())
    for name in old_names:
        if name in repo.damage:
            report(f"index file unreadable, rebuilt from packs: {repo.damage.found[name]}")
    stored = repo.list_packs()
    result.packs_missing = sorted(p.hex() for p in old if p not in stored)
    result.entries_dropped = sum(len(old[p]) for p in old if p not in stored)
    new: dict[bytes, list[PackedChunk]] = {}
    todo = sorted(p for p in stored if p not in skip)
    for n, pack in enumerate(todo, 1):
        if n % 100 == 0:
            report(f"reading pack headers {n}/{len(todo)}")
        size = stored[pack]
        known = old.get(pack)
        if known is not None and not read_all_packs:
            inside = [e for e in known if e[1] >= len(MAGIC) and e[1] + e[2] <= size]
            result.entries_dropped += len(known) - len(inside)
            if inside:
                new[pack] = inside
            continue
        try:
            header = read_header(repo, pack, size)
        except ObjectNotFound:
            continue  # removed while we listed: nothing to index
        except (IntegrityError, StorageError) as err:
            if isinstance(err, StorageError) and err.retryable:
                raise  # a timeout is no damage: a good pack must not drop out of the index
            result.packs_damaged[pack.hex()] = str(err)
            if known:  # the old index still describes it: 'repair packs' salvages it
                new[pack] = known
            continue
        if known is None:
            result.packs_added.append(pack.hex())
        new[pack] = [
            PackedChunk(e.chunk_id, e.offset, e.length, e.raw_length, int(e.type)) for e in header
        ]
    result.packs_indexed = len(new)
    report("writing index")
    result.index_files_written = write_index_files(repo, new)
    repo.verify_lock()
    report("removing old index files")
    written = set(repo.list_index_files()) - set(old_names)
    for name in old_names:
        if name not in written:
            delete_object(repo, name)
            result.index_files_removed += 1
    return result


@dataclass
class PackSalvage:
    """What `salvage_packs` found and did; ids as hex."""

    packs_read: int = 0
    packs_damaged: dict[str, str] = field(default_factory=dict)  # pack -> first problem
    packs_skipped: dict[str, str] = field(default_factory=dict)  # too large to read -> why
    chunks_salvaged: int = 0
    chunks_lost: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    index: IndexRepair | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)  # `index` too: a dict, or None


def max_pack_size(repo: Repository) -> int:
    """The largest pack this repository's writers can produce: a pack is closed
    once it reaches `pack_size`, so it holds at most that plus one sealed chunk,
    and a header of at most one entry per sealed chunk (each at least
    OVERHEAD bytes). Anything larger under a pack's name was planted."""
    chunk = max(MAX_CHUNK_SIZE.values()) + OVERHEAD + 1  # + the payload flag
    payload = repo.config.pack_size + chunk
    entries = payload // OVERHEAD + 1
    return min(MAX_PACK_SIZE, len(MAGIC) + payload + entries * ENTRY_SIZE + OVERHEAD + TRAILER_SIZE)


def _pack_problem(
    repo: Repository, pack: bytes, blob: bytes, entries: list[PackedChunk]
) -> str | None:
    """The first thing wrong with a whole pack, or None if it is sound."""
    short = pack.hex()[:16]
    if content_hash(blob) != pack:
        return f"pack {short}: content does not match its name"
    try:
        read_pack_header(blob, repo.sealer, f"pack {short}")
    except IntegrityError as err:
        return str(err)
    for cid, off, length, raw, btype in entries:
        if not _chunk_ok(repo, cid, blob[off : off + length], raw, btype):
            return f"pack {short}: chunk {cid.hex()[:16]} does not authenticate"
    return None


def _chunk_ok(repo: Repository, cid: bytes, sealed: bytes, raw: int, btype: int) -> bool:
    try:
        blob_type = BlobType(btype)
        if not 0 <= raw <= MAX_CHUNK_SIZE[blob_type]:
            return False  # the index or header claims a size nothing writes
        payload = repo.sealer.open(sealed, blob_ad(cid, blob_type), f"chunk {cid.hex()[:16]}")
        return repo.chunk_id(repo.compressor.unpack(payload, raw)) == cid
    except (IntegrityError, ValueError):
        return False


def _entries_of(
    repo: Repository, pack: bytes, blob: bytes, indexed: list[PackedChunk] | None
) -> list[PackedChunk]:
    """Every chunk the pack may hold: its header's entries and the index's."""
    found: dict[tuple[bytes, int], PackedChunk] = {}
    try:
        for e in read_pack_header(blob, repo.sealer, f"pack {pack.hex()[:16]}"):
            found[(e.chunk_id, e.offset)] = PackedChunk(
                e.chunk_id,
                e.offset,
                e.length,
                e.raw_length,
                int(e.type),
            )
    except IntegrityError:
        pass
    for entry in indexed or []:
        found.setdefault((entry[0], entry[1]), entry)
    return list(found.values())


def salvage_packs(
    repo: Repository,
    only: Iterable[bytes] | None = None,
    report: Report = lambda _: None,
) -> PackSalvage:
    """Find damaged packs (all packs are read, or only those in `only`), copy
    their good chunks into new packs, quarantine them, rebuild the index
    without them, and delete them from `data/`."""
    result = PackSalvage()
    indexed = entries_by_pack(repo.current_index_files().values())
    stored = repo.list_packs()
    chosen = sorted(stored) if only is None else sorted(p for p in set(only) if p in stored)
    damaged: list[bytes] = []
    wanted: dict[bytes, PackedChunk] = {}  # chunk id -> an entry in a damaged pack
    good: set[bytes] = set()  # chunks with an authenticated copy
    limit = max_pack_size(repo)
    for n, pack in enumerate(chosen, 1):
        report(f"reading packs {n}/{len(chosen)}")
        try:
            blob = get_bounded(repo.backend, fmt.pack_name(pack.hex()), limit, stored[pack])
        except ObjectNotFound:
            continue
        except IntegrityError as err:  # planted or foreign: never read whole, left alone
            result.packs_skipped[pack.hex()] = str(err)
            report(f"pack {pack.hex()[:16]} not read: {err}")
            continue
        result.packs_read += 1
        entries = _entries_of(repo, pack, blob, indexed.get(pack))
        problem = _pack_problem(repo, pack, blob, entries)
        if problem is None:
            continue
        result.packs_damaged[pack.hex()] = problem
        damaged.append(pack)
        for cid, off, length, raw, btype in entries:
            sealed = blob[off : off + length]
            if len(sealed) == length and _chunk_ok(repo, cid, sealed, raw, btype):
                if repo.add_sealed_copy(cid, BlobType(btype), sealed, raw):
                    result.chunks_salvaged += 1
                good.add(cid)
            else:
                wanted.setdefault(cid, PackedChunk(cid, off, length, raw, btype))
    if not damaged:
        return result
    repo.flush()  # 1. the salvaged chunks, in new packs, indexed
    for pack in damaged:  # 2. a copy of each damaged pack, out of the way
        blob = get_bounded(repo.backend, fmt.pack_name(pack.hex()), limit)
        repo.backend.put(quarantine_name(pack.hex()), blob)
        result.quarantined.append(pack.hex())
    # 3. an index without them; 4. (lock verified) the old index, then the packs
    result.index = rebuild_index(repo, exclude=damaged, report=report)
    other_copies = _chunks_elsewhere(indexed, set(damaged), stored)
    result.chunks_lost = sorted(c.hex() for c in wanted if c not in good and c not in other_copies)
    repo.verify_lock()
    for pack in damaged:
        delete_object(repo, fmt.pack_name(pack.hex()))
    return result


def _chunks_elsewhere(
    indexed: dict[bytes, list[PackedChunk]], damaged: set[bytes], stored: dict[bytes, int]
) -> set[bytes]:
    return {
        e[0]
        for pack, entries in indexed.items()
        if pack not in damaged and pack in stored
        for e in entries
    }
