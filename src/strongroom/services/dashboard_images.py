"""An image point's disk as a download: the raw disk, a fixed VHD (the raw
disk and the 512-byte footer `formats/vhd` writes) or a dynamic VHD (holes
left out), for the dashboard's "Download the disk" (docs/server.md,
"Dashboard").

Contract:
- STREAMED: blocks are read in address order by the export service's
  loaders (services/export.py `load_blocks`: a few chunks in flight), holes
  are yielded as zeros a megabyte at a time; nothing is built in memory or
  on disk, whatever the disk's size;
- planned before the first byte: the point is a block point, and for a VHD
  a whole number of sectors within the format's 2040 GiB (UsageError), so
  a refusal is a clean 4xx, never a cut stream; the stream's length is
  known up front (Content-Length);
- a damaged chunk raises mid-stream (IntegrityError): the client gets a
  short download, never a wrong disk;
- the VHD's unique id and time stamp are the point's (`point_uuid`): two
  downloads of one point are the same bytes, and the same bytes as
  `strongroom export POINT OUT.vhd --type fixed|dynamic` writes;
- a dynamic VHD is streamed too, though `formats/vhd`'s writer seeks back
  to write its block table last: which 2 MiB VHD blocks hold data is known
  from the point's block map before the first byte (a VHD block is
  allocated when any of the point's data blocks overlaps it, as the writer
  decides), so the footer copy, the header and the table go first; the
  table costs 4 bytes per 2 MiB (4 MiB for a 2 TiB disk).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np

from strongroom.errors import IntegrityError, UsageError
from strongroom.formats.vhd import MAX_SIZE
from strongroom.formats.vhd.structs import (
    DEFAULT_BLOCK_SIZE,
    DYNAMIC,
    FIXED,
    FOOTER_SIZE,
    HEADER_SIZE,
    SECTOR,
    UNALLOCATED,
    DynamicHeader,
    Footer,
    bitmap_size,
    vhd_time,
)
from strongroom.formats.vhd.writer import Zeros
from strongroom.model.blockmap import BlockMap
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services.export import Extent, load_blocks, point_uuid
from strongroom.services.image_restore import point_map
from strongroom.sparse import ZEROS

DISK_FORMATS = ("raw", "vhd-fixed", "vhd-dynamic")


@dataclass
class DiskDownload:
    """What the page answers: a file name, its length, and its bytes."""

    filename: str
    length: int
    media_type: str
    chunks: Iterator[bytes]


def disk_download(repo: Repository, point: RecoveryPoint, fmt: str) -> DiskDownload:
    """The disk of block point `point` as `raw`, `vhd-fixed` or
    `vhd-dynamic`; see the module's contract. UsageError before anything is
    read for another kind of point, another format, or a disk a VHD cannot
    hold."""
    if fmt not in DISK_FORMATS:
        raise UsageError("the disk's format is raw, vhd-fixed or vhd-dynamic")
    block_map = point_map(repo, point)  # UsageError: not an image point
    size = block_map.size
    name = f"strongroom-{point.id[:12]}"
    if fmt == "raw":
        chunks = _disk(load_blocks(repo, block_map), size)
        return DiskDownload(f"{name}.img", size, "application/octet-stream", chunks)
    if size % SECTOR or not 0 < size <= MAX_SIZE:
        raise UsageError(
            f"point {point.short_id} is {size} bytes: a VHD holds whole 512-byte sectors,"
            " at most 2040 GiB (download it raw)"
        )
    stamp = vhd_time(point.time.timestamp())
    raw = _disk(load_blocks(repo, block_map), size)
    if fmt == "vhd-fixed":
        fixed = Footer(kind=FIXED, current_size=size, uuid=point_uuid(point), timestamp=stamp)
        chunks = _then(raw, fixed.pack())
        return DiskDownload(f"{name}.vhd", size + FOOTER_SIZE, "application/x-vhd", chunks)
    footer = Footer(
        kind=DYNAMIC,
        current_size=size,
        uuid=point_uuid(point),
        timestamp=stamp,
        data_offset=FOOTER_SIZE,
    ).pack()
    head, allocated, length = _dynamic_layout(block_map, footer)
    chunks = _then(_dynamic_blocks(raw, allocated, head), footer)
    return DiskDownload(f"{name}.vhd", length, "application/x-vhd", chunks)


def _dynamic_layout(block_map: BlockMap, footer: bytes) -> tuple[bytes, list[bool], int]:
    """The dynamic VHD's footer copy, header and block table (as
    formats/vhd's writer lays them out), which VHD blocks are allocated,
    and the whole file's length."""
    bs, size = DEFAULT_BLOCK_SIZE, block_map.size
    nblocks = -(-size // bs)
    data = np.flatnonzero(~block_map.hole_mask()).astype(np.int64)
    starts = data * block_map.block_size
    ends = np.minimum(starts + block_map.block_size, size) - 1
    allocated = np.zeros(nblocks, dtype=bool)
    for step in range(-(-block_map.block_size // bs) + 1):  # VHD blocks one block spans
        index = starts // bs + step
        allocated[index[index <= ends // bs]] = True
    table_at = FOOTER_SIZE + HEADER_SIZE
    first_block = table_at + _round(nblocks * 4)
    stride = bitmap_size(bs) + bs
    bat = array("I", [UNALLOCATED]) * nblocks
    for n, block in enumerate(np.flatnonzero(allocated).tolist()):
        bat[block] = (first_block + n * stride) // SECTOR
    if sys.byteorder == "little":
        bat.byteswap()
    header = DynamicHeader(table_offset=table_at, max_table_entries=nblocks, block_size=bs)
    table = bat.tobytes()
    head = footer + header.pack() + table + bytes(first_block - table_at - len(table))
    length = first_block + int(allocated.sum()) * stride + FOOTER_SIZE
    return head, allocated.tolist(), length


def _round(n: int) -> int:
    return -(-n // SECTOR) * SECTOR


def _dynamic_blocks(
    raw: Generator[bytes, None, None], allocated: list[bool], head: bytes
) -> Generator[bytes, None, None]:
    """`head`, then each allocated VHD block (its full sector bitmap, its
    bytes, zeros past the disk's end) cut from the raw disk's stream; the
    bytes of unallocated blocks (zeros) are dropped."""
    bs = DEFAULT_BLOCK_SIZE
    bitmap = b"\xff" * bitmap_size(bs)
    yield head
    index, filled = 0, 0
    try:
        for piece in raw:
            view = memoryview(piece)
            while view.nbytes:
                keep = allocated[index]
                if keep and filled == 0:
                    yield bitmap
                n = min(view.nbytes, bs - filled)
                if keep:
                    yield bytes(view[:n])
                view = view[n:]
                filled += n
                if filled == bs:
                    index, filled = index + 1, 0
        while filled and allocated[index]:  # a VHD block is whole past the disk's end
            n = min(len(ZEROS), bs - filled)
            yield ZEROS[:n]
            filled = (filled + n) % bs
    finally:
        raw.close()


def _disk(extents: Iterator[Extent], size: int) -> Generator[bytes, None, None]:
    """The extents' bytes in order, holes as zeros; exactly `size` bytes."""
    done = 0
    try:
        for offset, data in extents:
            if offset != done:
                raise IntegrityError(f"the disk's map skips from {done} to {offset}")
            if isinstance(data, Zeros):
                left = data.length
                while left > 0:
                    piece = min(left, len(ZEROS))
                    yield ZEROS[:piece]
                    left -= piece
                done += data.length
            else:
                yield data
                done += len(data)
        if done != size:
            raise IntegrityError(f"the disk's map covers {done} of its {size} bytes")
    finally:
        if isinstance(extents, Generator):
            extents.close()  # a download stopped early stops the loaders


def _then(first: Generator[bytes, None, None], last: bytes) -> Generator[bytes, None, None]:
    try:
        yield from first
    finally:
        first.close()
    yield last


__all__ = ["DISK_FORMATS", "DiskDownload", "disk_download"]
