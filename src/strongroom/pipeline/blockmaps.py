"""Storing and loading block maps, and VM manifests naming several, as tree
chunks (formats: model/blockmap.py, model/vm.py)."""

from __future__ import annotations

import numpy as np

from strongroom.errors import IntegrityError
from strongroom.model.blockmap import BlockMap, MapRoot, decode_root, decode_segment
from strongroom.model.vm import VmManifest
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkReader, ChunkStore


def save_block_map(repo: ChunkStore, block_map: BlockMap) -> bytes:
    """Queue the map's segments and root; returns the root id (flush after!).

    Segments equal to the parent's hash to the same id and are not stored again."""
    segment_ids = [
        None if seg is None else repo.put_chunk(BlobType.TREE, seg) for seg in block_map.segments()
    ]
    return repo.put_chunk(BlobType.TREE, block_map.encode_root(segment_ids))


def load_block_map(repo: ChunkReader, root_id: bytes) -> BlockMap:
    return _load(repo, decode_root(repo.load_chunk(root_id, BlobType.TREE)))


def _load(repo: ChunkReader, root: MapRoot) -> BlockMap:
    out = BlockMap.empty(root.size, root.block_size)
    for i, seg_id in enumerate(root.segments):
        if seg_id is None:
            continue
        entries = root.segment_length(i)
        start = i * root.segment_blocks
        ids = decode_segment(repo.load_chunk(seg_id, BlobType.TREE), entries)
        out.ids[start : start + entries] = ids
    return out


def referenced_by_map(repo: ChunkStore, root_id: bytes) -> set[bytes]:
    """Every chunk a block point needs: root, segments and data."""
    root = decode_root(repo.load_chunk(root_id, BlobType.TREE))
    block_map = _load(repo, root)
    used = {root_id, *[s for s in root.segments if s is not None]}
    rows = block_map.ids[~block_map.hole_mask()]
    if len(rows):
        used.update(bytes(r) for r in np.unique(rows, axis=0))
    return used


def save_vm_manifest(repo: ChunkStore, manifest: VmManifest) -> bytes:
    """Queue a VM point's manifest; returns its id (flush after!)."""
    return repo.put_chunk(BlobType.TREE, manifest.encode())


def load_vm_manifest(repo: ChunkStore, manifest_id: bytes) -> VmManifest:
    data = repo.load_chunk(manifest_id, BlobType.TREE)
    try:
        return VmManifest.decode(data)
    except ValueError as err:
        raise IntegrityError(f"VM manifest {manifest_id.hex()[:16]}: {err}") from None


def referenced_by_vm(repo: ChunkStore, manifest_id: bytes) -> set[bytes]:
    """Every chunk a VM point needs: its manifest and each disk's map and data."""
    used = {manifest_id}
    for disk in load_vm_manifest(repo, manifest_id).disks:
        used |= referenced_by_map(repo, bytes.fromhex(disk.map_root))
    return used
