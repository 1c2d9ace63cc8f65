"""Removing what no point references: plan, then repack, reindex, delete.

Runs under the exclusive lock, so no backup can be adding references. The
order makes an interrupted prune harmless and repeatable:

1. copy still-used chunks out of partly used packs into new packs (sealed
   blobs are copied as they are: no re-encryption) and index the new packs;
2. write a new index of every kept pack;
3. delete the old index files;
4. delete the packs that are now unused (and orphans of killed backups).

Until step 3 completes, old and new index files both resolve every chunk;
after it, only deleted-to-be packs are unreferenced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from strongroom.errors import IntegrityError
from strongroom.repository import format as fmt
from strongroom.repository.entries import PackedChunk
from strongroom.repository.format import BlobType
from strongroom.repository.index_files import delete_object, entries_by_pack, write_index_files
from strongroom.repository.pack import blob_ad
from strongroom.repository.repo import Repository

_CHECK_EVERY = 50  # deletions between two checks of our lock


@dataclass
class PrunePlan:
    index_files: list[str]
    packs: dict[bytes, list[PackedChunk]]
    pack_sizes: dict[bytes, int]
    keep: list[bytes] = field(default_factory=list)
    repack: list[bytes] = field(default_factory=list)
    delete: list[bytes] = field(default_factory=list)
    orphans: list[bytes] = field(default_factory=list)
    lost: list[bytes] = field(default_factory=list)  # indexed, but missing from storage
    used_in_pack: dict[bytes, list[PackedChunk]] = field(default_factory=dict)
    missing: set[bytes] = field(default_factory=set)  # used, but in no existing pack
    missing_in_lost: int = 0  # of `missing`: indexed in packs that are gone
    used_bytes: int = 0
    unused_bytes: int = 0
    repack_bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "packs_total": len(self.packs),
            "packs_keep": len(self.keep),
            "packs_repack": len(self.repack),
            "packs_delete": len(self.delete),
            "packs_orphaned": len(self.orphans),
            "packs_missing": len(self.lost),
            "used_bytes": self.used_bytes,
            "unused_bytes": self.unused_bytes,
            "repack_bytes": self.repack_bytes,
            "missing_chunks": len(self.missing),
        }


def plan_prune(repo: Repository, used: set[bytes], max_unused: float = 0.0) -> PrunePlan:
    """Classify every pack. `max_unused` (0..1) tolerates that fraction of unused
    bytes in a pack before repacking it."""
    files = repo.read_index_files()  # a damaged one is skipped (its chunks show up as missing)
    index_files = list(files)
    packs = entries_by_pack(repo.current_index_files(files).values())
    sizes = repo.list_packs()  # foreign names under data/ are reported, not touched
    plan = PrunePlan(index_files, packs, sizes)
    plan.orphans = [p for p in sizes if p not in packs]
    seen: set[bytes] = set()
    # Visit fully used packs first so duplicates are dropped from the others.
    order = sorted(packs, key=lambda p: -sum(1 for e in packs[p] if e[0] in used))
    for pack in order:
        entries = packs[pack]
        if pack not in sizes:
            # Indexed but gone: it holds nothing. A copy elsewhere must be kept, and
            # chunks with no other copy show up in `missing` (prune then refuses).
            plan.lost.append(pack)
            continue
        keep_entries = []
        for e in entries:
            if e[0] in used and e[0] not in seen:
                seen.add(e[0])
                keep_entries.append(e)
        used_len = sum(e[2] for e in keep_entries)
        total_len = sum(e[2] for e in entries)
        plan.used_bytes += used_len
        plan.unused_bytes += total_len - used_len
        if not keep_entries:
            plan.delete.append(pack)
        elif used_len == total_len or (total_len - used_len) <= max_unused * total_len:
            plan.keep.append(pack)
            plan.used_in_pack[pack] = entries
        else:
            plan.repack.append(pack)
            plan.used_in_pack[pack] = keep_entries
            plan.repack_bytes += used_len
    plan.missing = used - seen
    if plan.missing:
        in_lost = {e[0] for p in plan.lost for e in packs[p]}
        plan.missing_in_lost = len(plan.missing & in_lost)
    return plan


def missing_message(plan: PrunePlan) -> str:
    """Why prune refuses when points use chunks that no existing pack holds."""
    parts = []
    if plan.missing_in_lost:
        parts.append(
            f"{plan.missing_in_lost} chunks used by points are in packs that are missing "
            f"({len(plan.lost)} packs)"
        )
    unindexed = len(plan.missing) - plan.missing_in_lost
    if unindexed:
        parts.append(f"{unindexed} chunks used by points are in no index")
    return (
        f"{' and '.join(parts)}; prune refuses to guess: 'strongroom check' lists the "
        "damaged files, 'strongroom repair index' then 'strongroom repair points --forget' "
        "fix it"
    )


def execute_prune(
    repo: Repository, plan: PrunePlan, report: Callable[[str], None] = lambda _: None
) -> None:
    if plan.missing:
        raise IntegrityError(missing_message(plan))
    # 1. repack
    for n, pack in enumerate(plan.repack, 1):
        report(f"repacking {n}/{len(plan.repack)}")
        name = fmt.pack_name(pack.hex())
        for cid, off, length, raw, btype in plan.used_in_pack[pack]:
            sealed = repo.backend.get_range(name, off, length)  # never the whole pack
            btype_e = BlobType(btype)
            repo.sealer.open(
                sealed, blob_ad(cid, btype_e), f"chunk {cid.hex()[:16]} in pack {pack.hex()[:16]}"
            )
            repo.add_sealed_copy(cid, btype_e, sealed, raw)
    repo.flush()
    new_index_files = set(repo.list_index_files()) - set(plan.index_files)
    # 2. a fresh index of the kept packs (new packs are indexed by flush already)
    report("writing index")
    write_index_files(repo, {pack: plan.used_in_pack[pack] for pack in plan.keep})
    # 3. old index files: from here on we delete, so our exclusive lock must
    # still hold (a prune paused past the stale age, or whose lock was removed,
    # may now run beside a backup that relies on what it would delete): checked
    # before the first deletion and every 50th, here and in step 4.
    report("removing old index files")
    old_index = [name for name in plan.index_files if name not in new_index_files]
    for n, name in enumerate(old_index):
        if n % _CHECK_EVERY == 0:
            repo.verify_lock()
        delete_object(repo, name)
    # 4. unused packs
    doomed = plan.delete + plan.repack + plan.orphans
    for n, pack in enumerate(doomed):
        if n % _CHECK_EVERY == 0:
            report(f"deleting packs {n + 1}/{len(doomed)}")
            repo.verify_lock()
        delete_object(repo, fmt.pack_name(pack.hex()))
