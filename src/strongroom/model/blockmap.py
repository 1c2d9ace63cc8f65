"""Block maps: the virtual storage address translation of a block source.

A block source presents a virtual disk of `size` bytes. Its address space is
cut into fixed blocks of `block_size` bytes (a power of two); address `a` lies
in block `a // block_size`, and the map gives that block's chunk id, or the
all-zero id for a hole (a block that reads as zeros, stored nowhere). The last
block may be short when `size` is not a multiple of the block size.

Stored form (docs/format.md, "Block maps"): the map is split into segments of
`SEGMENT_BLOCKS` entries, each a tree chunk of raw 32-byte ids, so that an
incremental point whose changes touch few segments shares the others with its
parent (equal bytes, equal chunk id). The root is a msgpack map:

    {"v": 1, "size": int, "block_size": int, "segment_blocks": int,
     "segments": [id bytes | None, ...]}    # None: a segment that is all holes

A point of kind "block" names its root chunk in its `tree` field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from strongroom.errors import IntegrityError, UnsupportedVersion
from strongroom.types import ID_SIZE

BLOCK_MAP_VERSION = 1
SEGMENT_BLOCKS = 4096
HOLE = bytes(ID_SIZE)
MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 64 * 1024 * 1024
MAX_VIRTUAL_SIZE = 1 << 56  # 64 PiB: far beyond any disk, small enough to allocate a map for

IdArray = npt.NDArray[np.uint8]


def check_geometry(size: int, block_size: int) -> None:
    """Raise ValueError unless `size` and `block_size` make a valid map."""
    if block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size} is not a power of two in 4 KiB..64 MiB")
    if size < 0 or size > MAX_VIRTUAL_SIZE:
        raise ValueError(f"virtual size {size} is out of range")


@dataclass
class BlockMap:
    """Chunk ids of every block of a virtual disk; rows of zeros are holes."""

    size: int
    block_size: int
    ids: IdArray  # shape (blocks, 32), uint8

    @classmethod
    def empty(cls, size: int, block_size: int) -> BlockMap:
        """A map of holes; ValueError for a bad geometry, IntegrityError when its
        ids do not fit in memory (a map read from storage may claim any size up to
        MAX_VIRTUAL_SIZE: 2^44 blocks of 4 KiB would need 512 TiB)."""
        check_geometry(size, block_size)
        blocks = -(-size // block_size)
        try:
            ids = np.zeros((blocks, ID_SIZE), dtype=np.uint8)
        except MemoryError:
            raise IntegrityError(
                f"a block map of {blocks} blocks ({size} bytes in blocks of {block_size}) "
                f"needs {blocks * ID_SIZE / 2**30:.1f} GiB of memory: more than is available"
            ) from None
        return cls(size, block_size, ids)

    @property
    def blocks(self) -> int:
        return int(self.ids.shape[0])

    def extent(self, block: int) -> tuple[int, int]:
        """(offset, length) of a block; the last one may be short."""
        offset = block * self.block_size
        return offset, min(self.block_size, self.size - offset)

    def get(self, block: int) -> bytes | None:
        """The block's chunk id, or None for a hole."""
        raw = self.ids[block].tobytes()
        return None if raw == HOLE else raw

    def assign(self, block: int, chunk_id: bytes | None) -> None:
        self.ids[block] = np.frombuffer(chunk_id or HOLE, dtype=np.uint8)

    def hole_mask(self) -> npt.NDArray[np.bool_]:
        return np.asarray(~self.ids.any(axis=1), dtype=np.bool_)

    def data_blocks(self) -> int:
        return int(self.blocks - int(self.hole_mask().sum()))

    def data_bytes(self) -> int:
        """Bytes of the virtual disk that are not holes."""
        mask = ~self.hole_mask()
        total = int(mask.sum()) * self.block_size
        if self.blocks and mask[-1]:
            total -= self.blocks * self.block_size - self.size
        return total

    def resized(self, size: int) -> BlockMap:
        """A copy for a disk that grew (new blocks are holes) or shrank.

        A shrunken last block keeps its id only when it was whole before and
        still is; otherwise its content changed length and must be read again,
        which the caller learns from `changed_by_resize`.
        """
        out = BlockMap.empty(size, self.block_size)
        keep = min(out.blocks, self.blocks)
        out.ids[:keep] = self.ids[:keep]
        return out

    def changed_by_resize(self, new_size: int) -> range:
        """Blocks whose extent differs between this size and `new_size`."""
        bs = self.block_size
        old_blocks, new_blocks = self.blocks, -(-new_size // bs)
        first = min(old_blocks, new_blocks)
        # A last block that was or becomes partial changes length.
        if first and (self.size % bs or new_size % bs) and self.size != new_size:
            first -= 1
        return range(first, new_blocks)

    def iter_runs(self) -> Iterator[tuple[int, int, bool]]:
        """(first block, count, is_hole) runs in address order."""
        mask = self.hole_mask()
        if not len(mask):
            return
        edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
        starts = np.concatenate(([0], edges))
        ends = np.concatenate((edges, [len(mask)]))
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            yield s, e - s, bool(mask[s])

    # --- codec ---------------------------------------------------------------

    def segments(self) -> Iterator[bytes | None]:
        """Raw bytes of each segment, or None for an all-hole segment."""
        for start in range(0, self.blocks, SEGMENT_BLOCKS):
            seg = self.ids[start : start + SEGMENT_BLOCKS]
            yield seg.tobytes() if seg.any() else None

    def encode_root(self, segment_ids: list[bytes | None]) -> bytes:
        packed: bytes = msgpack.packb(
            {
                "v": BLOCK_MAP_VERSION,
                "size": self.size,
                "block_size": self.block_size,
                "segment_blocks": SEGMENT_BLOCKS,
                "segments": segment_ids,
            },
            use_bin_type=True,
        )
        return packed


@dataclass(frozen=True)
class MapRoot:
    """A decoded root: geometry plus the segment chunk ids."""

    size: int
    block_size: int
    segment_blocks: int
    segments: list[bytes | None]

    @property
    def blocks(self) -> int:
        return -(-self.size // self.block_size)

    def segment_length(self, index: int) -> int:
        """Number of entries in segment `index`."""
        return min(self.segment_blocks, self.blocks - index * self.segment_blocks)


def decode_root(blob: bytes) -> MapRoot:
    """Parse and validate a root; IntegrityError on anything malformed."""
    try:
        doc: Any = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as err:
        raise IntegrityError(f"block map root is not valid msgpack: {err}") from None
    if not isinstance(doc, dict):
        raise IntegrityError("block map root is not a map")
    version = doc.get("v")
    if not isinstance(version, int):
        raise IntegrityError("block map root has no version")
    if version > BLOCK_MAP_VERSION:
        raise UnsupportedVersion(f"block map format {version} is newer than this strongroom")
    size, bs, seg_blocks, segments = (
        doc.get("size"),
        doc.get("block_size"),
        doc.get("segment_blocks"),
        doc.get("segments"),
    )
    if (
        not isinstance(size, int)
        or not isinstance(bs, int)
        or not isinstance(seg_blocks, int)
        or not isinstance(segments, list)
    ):
        raise IntegrityError("block map root lacks size, block_size or segments")
    try:
        check_geometry(size, bs)
    except ValueError as err:
        raise IntegrityError(f"block map root: {err}") from None
    if seg_blocks <= 0 or seg_blocks > 1 << 24:
        raise IntegrityError(f"block map root: bad segment size {seg_blocks}")
    blocks = -(-size // bs)
    if len(segments) != -(-blocks // seg_blocks):
        raise IntegrityError("block map root: segment count does not match the size")
    for seg in segments:
        if seg is not None and (not isinstance(seg, bytes) or len(seg) != ID_SIZE):
            raise IntegrityError("block map root: malformed segment id")
    return MapRoot(size, bs, seg_blocks, list(segments))


def decode_segment(blob: bytes, entries: int) -> IdArray:
    if len(blob) != entries * ID_SIZE:
        raise IntegrityError(
            f"block map segment holds {len(blob)} bytes, expected {entries * ID_SIZE}"
        )
    return np.frombuffer(blob, dtype=np.uint8).reshape(entries, ID_SIZE)
