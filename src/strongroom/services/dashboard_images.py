"""An image point's disk as a download: the raw disk, or a fixed VHD (the
raw disk and the 512-byte footer `formats/vhd` writes), for the
dashboard's "Download the disk" (docs/server.md, "Dashboard").

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
  downloads of one point are the same bytes, and the same disk as
  `strongroom export POINT --vhd-type fixed` writes.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass

from strongroom.errors import IntegrityError, UsageError
from strongroom.formats.vhd import MAX_SIZE
from strongroom.formats.vhd.structs import FIXED, SECTOR, Footer, vhd_time
from strongroom.formats.vhd.writer import Zeros
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services.export import Extent, load_blocks, point_uuid
from strongroom.services.image_restore import point_map
from strongroom.sparse import ZEROS

DISK_FORMATS = ("raw", "vhd")


@dataclass
class DiskDownload:
    """What the page answers: a file name, its length, and its bytes."""

    filename: str
    length: int
    media_type: str
    chunks: Iterator[bytes]


def disk_download(repo: Repository, point: RecoveryPoint, fmt: str) -> DiskDownload:
    """The disk of block point `point` as `raw` or `vhd` (fixed); see the
    module's contract. UsageError before anything is read for another kind
    of point, another format, or a disk a VHD cannot hold."""
    if fmt not in DISK_FORMATS:
        raise UsageError("the disk's format is raw or vhd")
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
    footer = Footer(
        kind=FIXED,
        current_size=size,
        uuid=point_uuid(point),
        timestamp=vhd_time(point.time.timestamp()),
    ).pack()
    chunks = _then(_disk(load_blocks(repo, block_map), size), footer)
    return DiskDownload(f"{name}.vhd", size + len(footer), "application/x-vhd", chunks)


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
