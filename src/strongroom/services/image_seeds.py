"""Golden disk images as seeds: adding one, backing up against one, checking one.

A BLOCK seed is a disk image stored exactly as an image backup stores it (the
same reader, `--format`/`--allow-backing` rules and pipeline: `store_image`),
so its `tree` is a block map (docs/format.md §10a) in blocks of the
repository's block size. A machine's first image backup compares each block
with the seed's map in the place of a parent point's map: a block equal to
the seed's is recorded without being stored again, so only the machine's own
blocks are new to the repository. The point records the seed (`PointSeeds`,
root "/") and how its blocks relate to the seed's:

    identical  same chunk as the seed's block at the same address (data)
    own        data of the machine's own (the seed had other data, or none)
    zeroed     a hole in the point where the seed holds data

Restores and exports that put the point on top of the golden image write
exactly the blocks that are not identical (own and zeroed, the zeroed ones as
explicit zeros), after checking that the golden image given is the seed's:
same virtual size, and its blocks hash (with the repository's chunk id) to the
seed's map entries, on a deterministic sample or on every block.

Sampling is bounded (`SAMPLE_BLOCKS`) and evenly spread, so a choice among
seeds or a suggestion reads a few hundred blocks of any disk, not the disk.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from strongroom.errors import IntegrityError, SourceError, StrongroomError, UsageError
from strongroom.model.blockmap import BlockMap
from strongroom.model.kinds import PointKind
from strongroom.model.origin import PointSeeds, UsedSeed
from strongroom.model.seed import Seed
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.repository.repo import Repository
from strongroom.services.seeds import SeedRepository, list_seeds, load_seed
from strongroom.sources.block import BlockSource
from strongroom.sources.images import OpenRules, open_image, probe_image
from strongroom.sources.qemu_img import check_consistency
from strongroom.trackers.changes import Mask
from strongroom.types import ProgressCallback, no_progress

if TYPE_CHECKING:  # seed_add pulls in the file pipeline: loaded when a seed is added
    from strongroom.services.seed_add import SeedContent

SAMPLE_BLOCKS = 256  # suggest and the check of a golden image: blocks read at most
CHOICE_BLOCKS = 64  # the automatic choice among seeds, on every first backup
MIN_SHARE = 0.25  # a seed is chosen automatically when it holds this share of the sample


# --- adding ------------------------------------------------------------------


def add_image_seed(
    repo: Repository,
    source: str,
    image_format: str | None = None,
    allow_backing: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> SeedContent:
    """Store the image's blocks and block map (the image backup pipeline, in
    blocks of the repository's block size); nothing is recorded on error (the
    caller records the seed only after this returns)."""
    from strongroom.services.image_backup import ImageBackupRequest, store_image
    from strongroom.services.seed_add import SeedContent

    req = ImageBackupRequest(
        source=source,
        changed_since="none",  # a golden image is read as it stands: no bitmap is added to it
        image_format=image_format,
        allow_backing=allow_backing,
    )
    # A golden image is read once and shared by every machine built on it: a
    # qcow2's own metadata is checked first (qemu reads a truncated one as zeros).
    info = probe_image(source, rules=req.rules) if "://" not in source else None
    if info is not None and info.format == "qcow2":
        check_consistency(info.path, "qcow2", info.follow)
    summary = store_image(repo, req, repo.config.block_size, progress, cancel)
    return SeedContent(
        PointKind.BLOCK,
        summary.map_root,
        {
            "size": summary.size,
            "bytes": summary.size,
            "block_size": summary.block_size,
            "blocks": summary.blocks,
            "data_blocks": summary.blocks - summary.holes,
            "holes": summary.holes,
            "blocks_new": summary.blocks_new,
            "bytes_read": summary.bytes_read,
            "data_added": summary.data_added,
            "data_added_stored": summary.data_added_stored,
        },
    )


# --- maps and samples --------------------------------------------------------


def require_block_seed(seed: Seed) -> None:
    if seed.content != PointKind.BLOCK:
        raise UsageError(f"seed {seed.name} holds files, not a disk image")


def seed_map(repo: SeedRepository, seed: Seed) -> BlockMap:
    """The seed's block map (IntegrityError, naming the seed, if unreadable)."""
    require_block_seed(seed)
    try:
        return load_block_map(repo, bytes.fromhex(seed.tree))
    except IntegrityError as err:
        raise IntegrityError(f"seed {seed.name}: {err}") from None


def sample_blocks(blocks: int, limit: int) -> list[int]:
    """At most `limit` block numbers spread evenly over [0, blocks), first and
    last included: the same sample every time for the same disk."""
    if blocks <= limit:
        return list(range(blocks))
    return sorted({int(x) for x in np.linspace(0, blocks - 1, limit).round()})


def hash_blocks(
    repo: SeedRepository, source: BlockSource, block_size: int, blocks: Iterable[int]
) -> dict[int, bytes | None]:
    """Block number -> the repository's chunk id of its content (None: all zeros,
    a hole in a map)."""
    size = source.size
    ranges = [
        (b * block_size, min(block_size, size - b * block_size))
        for b in blocks
        if b * block_size < size
    ]
    out: dict[int, bytes | None] = {}
    for offset, data in source.read_blocks(ranges):
        out[offset // block_size] = None if not any(data) else repo.chunk_id(data)
    return out


def _map_id(block_map: BlockMap, block: int) -> bytes | None:
    return block_map.get(block) if block < block_map.blocks else None


# --- choosing a seed for a first backup ----------------------------------------


def choose_seed(
    repo: SeedRepository, source: BlockSource, block_size: int
) -> tuple[Seed, BlockMap] | None:
    """The BLOCK seed of the same virtual size and block size whose blocks, at
    the same addresses, equal most of a sample of `source`'s data blocks; None
    when no seed holds at least MIN_SHARE of them (or the sample is all zeros)."""
    candidates = [
        s
        for s in list_seeds(repo)
        if s.content == PointKind.BLOCK
        and s.summary.get("size") == source.size
        and s.summary.get("block_size") == block_size
    ]
    if not candidates:
        return None
    blocks = -(-source.size // block_size)
    sample = hash_blocks(repo, source, block_size, sample_blocks(blocks, CHOICE_BLOCKS))
    data = {b: cid for b, cid in sample.items() if cid is not None}
    if not data:
        return None
    best: tuple[float, Seed, BlockMap] | None = None
    for seed in candidates:
        try:
            block_map = seed_map(repo, seed)
        except StrongroomError:
            continue  # a damaged seed is no base; `check` reports it
        if block_map.size != source.size or block_map.block_size != block_size:
            continue
        share = sum(_map_id(block_map, b) == cid for b, cid in data.items()) / len(data)
        if share >= MIN_SHARE and (best is None or share > best[0]):
            best = (share, seed, block_map)
    return None if best is None else (best[1], best[2])


def check_seed_geometry(seed: Seed, block_map: BlockMap, size: int, what: str) -> None:
    """Refuse a disk of another virtual size than the seed's image."""
    if block_map.size != size:
        raise UsageError(
            f"{what} is a disk of {size} bytes, but seed {seed.name} is an image of"
            f" {block_map.size} bytes: it does not build on that seed"
        )


# --- the point's record --------------------------------------------------------


def seed_classes(point_map: BlockMap, base: BlockMap) -> dict[str, dict[str, int]]:
    """Blocks and bytes of the point per class against the seed's map (see the
    module docstring); maps of other geometries compare up to the shorter one."""
    n = min(point_map.blocks, base.blocks)
    lengths = np.full(point_map.blocks, point_map.block_size, dtype=np.int64)
    if point_map.blocks:
        lengths[-1] = point_map.size - (point_map.blocks - 1) * point_map.block_size
    hole = point_map.hole_mask()
    seed_hole = np.ones(point_map.blocks, dtype=np.bool_)
    seed_hole[:n] = base.hole_mask()[:n]
    equal = np.zeros(point_map.blocks, dtype=np.bool_)
    equal[:n] = (point_map.ids[:n] == base.ids[:n]).all(axis=1)
    masks = {
        "identical": equal & ~hole,
        "own": ~equal & ~hole,
        "zeroed": hole & ~seed_hole,
    }
    return {
        word: {"blocks": int(mask.sum()), "bytes": int(lengths[mask].sum())}
        for word, mask in masks.items()
    }


def point_seeds(seed: Seed, point_map: BlockMap, base: BlockMap) -> PointSeeds:
    """The `seeds` record of an image point that builds on `seed`."""
    classes = seed_classes(point_map, base)
    return PointSeeds(
        used=[UsedSeed(seed.id, seed.name, str(seed.kind), seed.version)],
        root="/",
        classes=classes,
        seed_bytes={seed.name: classes["identical"]["bytes"]},
    )


def inherited_seeds(
    repo: SeedRepository, record: PointSeeds, point_map: BlockMap
) -> tuple[PointSeeds | None, str]:
    """An incremental's record: its parent's seed, the classes counted again for
    this point's map; (None, why) when the seed is gone or unreadable."""
    if len(record.used) != 1:
        return None, "the parent point's seed record is not an image's"
    used = record.used[0]
    try:
        seed = load_seed(repo, used.id)
        base = seed_map(repo, seed)
    except StrongroomError as err:
        return None, f"seed {used.name} of the parent point cannot be read ({err})"
    if base.block_size != point_map.block_size:
        return None, f"seed {used.name} has another block size than this point"
    return point_seeds(seed, point_map, base), ""


def seed_of_point(repo: SeedRepository, record: PointSeeds | None, what: str) -> Seed:
    """The one seed an image point builds on; UsageError if it has none or it was removed."""
    if record is None or not record.used:
        raise UsageError(f"{what} builds on no seed: restore it with --scope full")
    used = record.used[0]
    try:
        return load_seed(repo, used.id)
    except StrongroomError:
        raise UsageError(
            f"seed {used.name} that {what} builds on was removed or is damaged:"
            " restore it with --scope full"
        ) from None


# --- checking a golden image ---------------------------------------------------


def verify_golden(
    repo: SeedRepository,
    source: BlockSource,
    seed: Seed,
    base: BlockMap,
    *,
    full: bool = False,
    what: str = "",
) -> int:
    """Refuse (UsageError, one line) a disk that is not the seed's image: its
    virtual size, then its blocks' chunk ids against the seed's map on an even
    sample of SAMPLE_BLOCKS blocks, or every block with `full`. Returns the
    number of blocks compared."""
    what = what or source.description
    check_seed_geometry(seed, base, source.size, what)
    blocks = list(range(base.blocks)) if full else sample_blocks(base.blocks, SAMPLE_BLOCKS)
    compared = 0
    for chunk in _batches(blocks, 64):
        try:
            found = hash_blocks(repo, source, base.block_size, chunk)
        except SourceError as err:
            raise UsageError(f"{what} cannot be read as seed {seed.name}'s image: {err}") from None
        for block, cid in found.items():
            compared += 1
            if cid != base.get(block):
                hint = "" if full else " (a sampled block)"
                raise UsageError(
                    f"{what} is not the image of seed {seed.name}: its block at offset"
                    f" {block * base.block_size} differs{hint}"
                )
    return compared


def _batches(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def differing_blocks(point_map: BlockMap, base: BlockMap) -> Mask:
    """Mask of the point's blocks whose entry differs from the seed's (own
    data, and holes where the seed holds data): what an overlay must hold."""
    if point_map.size != base.size or point_map.block_size != base.block_size:
        raise UsageError("the point and its seed differ in geometry: restore with --scope full")
    return np.asarray((point_map.ids != base.ids).any(axis=1), dtype=np.bool_)


# --- suggest ----------------------------------------------------------------------


def suggest_image(
    repo: Repository,
    seeds: Sequence[Seed],
    path: str,
    rules: OpenRules = OpenRules(),
) -> list[tuple[Seed, float, int]]:
    """How much of the image at `path` each BLOCK seed covers: up to
    SAMPLE_BLOCKS blocks, spread evenly, hashed in each seed's block size and
    looked up anywhere in that seed's map. (seed, covered fraction, data blocks
    sampled), best first; FILES seeds are left out."""
    block_seeds = [s for s in seeds if s.content == PointKind.BLOCK]
    if not block_seeds:
        return []
    info = probe_image(path, rules=rules)
    out: list[tuple[Seed, float, int]] = []
    source = open_image(info)
    try:
        by_size: dict[int, dict[int, bytes | None]] = {}
        for seed in block_seeds:
            try:
                base = seed_map(repo, seed)
            except StrongroomError:
                continue
            bs = base.block_size
            if bs not in by_size:
                blocks = -(-source.size // bs)
                by_size[bs] = hash_blocks(repo, source, bs, sample_blocks(blocks, SAMPLE_BLOCKS))
            data = [cid for cid in by_size[bs].values() if cid is not None]
            if not data:
                out.append((seed, 0.0, 0))
                continue
            known = {bytes(r) for r in base.ids[~base.hole_mask()]}
            out.append((seed, sum(c in known for c in data) / len(data), len(data)))
    finally:
        source.close()
    return sorted(out, key=lambda t: (-t[1], t[0].name))
