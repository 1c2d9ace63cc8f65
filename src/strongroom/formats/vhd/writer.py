"""Streamed writing of fixed, dynamic and differencing VHDs.

`write_vhd` consumes the disk's extents once, in increasing offset order, and
keeps at most one block's worth of references to the caller's buffers plus the
block allocation table (4 bytes per block: 4 KiB for a 2 TiB disk of 2 MiB
blocks), so memory does not grow with the disk size. Sparse layouts are
written as: footer copy, dynamic header, parent locator data (differencing
only), BAT, blocks in disk order, footer; the BAT and the first three
structures are written last, by seeking back, so the output must be seekable.

Choices that other tools depend on:
- The creator application is `win ` (as Hyper-V writes): qemu then takes the
  size from the footer instead of rounding it down to the CHS geometry.
- Dynamic blocks get full sector bitmaps (as qemu and Hyper-V write) and the
  unwritten parts of an allocated block hold zeros. Differencing blocks get
  bits only for the sectors the caller wrote, data or explicit `Zeros`, so the
  rest still reads from the parent.
- Parent locators: W2ku (absolute path) and W2ru (relative, `.\\name`), UTF-16
  LE; the parent name in the header is the parent's file name, UTF-16 BE. The
  locator data space is written in bytes (a whole sector, 512), as Windows and
  UrBackup do; the spec says sectors, and 512 of either covers the data.
- The parent time stamp is the parent file's modification time (as blktap and
  VirtualBox write it), the child's own time stamp its creation time.
"""

from __future__ import annotations

import os
import sys
import uuid as uuidlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PureWindowsPath
from typing import BinaryIO, Literal

from strongroom.formats.vhd.structs import (
    DEFAULT_BLOCK_SIZE,
    DIFFERENCING,
    DYNAMIC,
    FIXED,
    FOOTER_SIZE,
    HEADER_SIZE,
    KIND_CODES,
    MAX_BLOCK_SIZE,
    MAX_SIZE,
    SECTOR,
    UNALLOCATED,
    W2KU,
    W2RU,
    DynamicHeader,
    Footer,
    Locator,
    VhdError,
    bitmap_size,
    vhd_time,
)
from strongroom.sparse import ZEROS, nonzero_runs

Kind = Literal["fixed", "dynamic", "differencing"]
MIN_WRITE_BLOCK_SIZE = 4096


class VhdTooLarge(VhdError):
    """The disk is larger than a VHD can describe (2040 GiB)."""


@dataclass(frozen=True)
class Zeros:
    """An extent that must read as zeros, even over a parent's data."""

    length: int


@dataclass(frozen=True)
class ParentInfo:
    """What a differencing disk records about its parent."""

    uuid: uuidlib.UUID
    size: int
    timestamp: int  # VHD time stamp of the parent's last modification
    name: str  # parent file name, stored in the dynamic header
    absolute_path: str  # Windows-style, for the W2ku locator
    relative_path: str  # Windows-style, relative to the child's folder, for W2ru

    @classmethod
    def from_file(cls, parent: str | os.PathLike[str], child: str | os.PathLike[str]) -> ParentInfo:
        """Describe the VHD at `parent` for a child that will be written at `child`."""
        from strongroom.formats.vhd.reader import read_footer

        parent_path = Path(os.path.abspath(parent))
        child_dir = Path(os.path.abspath(child)).parent
        footer = read_footer(parent_path)
        rel = os.path.relpath(parent_path, child_dir).replace("/", "\\")
        if not rel.startswith(".."):
            rel = ".\\" + rel
        return cls(
            uuid=footer.uuid,
            size=footer.current_size,
            timestamp=vhd_time(parent_path.stat().st_mtime),
            name=parent_path.name,
            absolute_path=str(parent_path).replace("/", "\\"),
            relative_path=rel,
        )


@dataclass(frozen=True)
class VhdInfo:
    """What `write_vhd` wrote."""

    kind: Kind
    size: int
    uuid: uuidlib.UUID
    timestamp: int
    block_size: int | None
    allocated_blocks: int
    file_size: int
    parent_uuid: uuidlib.UUID | None


Data = bytes | bytearray | memoryview | Zeros


def check_size(size: int) -> None:
    """Raise unless `size` is a whole number of sectors a VHD can hold."""
    if size > MAX_SIZE:
        raise VhdTooLarge(
            f"disk of {size} bytes is too large for VHD: the format holds at most 2040 GiB"
            f" ({MAX_SIZE} bytes); use VHDX or raw"
        )
    if size <= 0 or size % SECTOR:
        raise ValueError(f"VHD size {size} is not a positive multiple of {SECTOR}")


def _length(data: Data) -> int:
    if isinstance(data, Zeros):
        return data.length
    return memoryview(data).nbytes


def _checked(size: int, extents: Iterable[tuple[int, Data]]) -> Iterable[tuple[int, Data]]:
    cursor = 0
    for offset, data in extents:
        if data is None:
            raise TypeError("VHD extent data must be bytes or Zeros(length), not None")
        n = _length(data)
        if offset % SECTOR or n % SECTOR:
            raise ValueError(f"VHD extent at {offset} (+{n}) is not sector-aligned")
        if offset < cursor or offset + n > size:
            raise ValueError(f"VHD extent at {offset} (+{n}) is out of order or past the disk")
        cursor = offset + n
        if n:
            yield offset, data


def _write_zeros(out: BinaryIO, n: int) -> None:
    while n > 0:
        k = min(n, len(ZEROS))
        out.write(ZEROS[:k])
        n -= k


def _write_sparse_data(out: BinaryIO, data: Data) -> None:
    """Write `data`, seeking over its all-zero pieces (file holes read as zeros)."""
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    pos = 0
    for start, end in nonzero_runs(view):
        out.seek(start - pos, os.SEEK_CUR)
        out.write(view[start:end])
        pos = end
    out.seek(len(view) - pos, os.SEEK_CUR)


def _set_bits(bitmap: bytearray, start: int, count: int) -> None:
    """Set `count` bits from bit `start`, most significant bit of each byte first."""
    end = start + count
    while start < end and start % 8:
        bitmap[start // 8] |= 0x80 >> (start % 8)
        start += 1
    full = (end - start) // 8
    if full > 0:
        bitmap[start // 8 : start // 8 + full] = b"\xff" * full
        start += full * 8
    while start < end:
        bitmap[start // 8] |= 0x80 >> (start % 8)
        start += 1


def write_vhd(
    out: BinaryIO,
    size: int,
    blocks: Iterable[tuple[int, Data]],
    *,
    kind: Kind = "dynamic",
    block_size: int = DEFAULT_BLOCK_SIZE,
    parent: ParentInfo | None = None,
    uuid: uuidlib.UUID | None = None,
    timestamp: datetime | None = None,
) -> VhdInfo:
    """Write a VHD of `size` bytes to `out`, starting at its current position.

    `blocks` yields `(offset, data)` for the disk's non-hole extents in increasing,
    non-overlapping offset order; offsets and lengths are multiples of 512; `data`
    is a bytes-like object of any such length or `Zeros(length)` for an extent that
    must read as zeros (in a differencing disk this allocates the block and hides
    the parent's data). Holes read as zeros (fixed, dynamic) or from the parent
    (differencing). Anything in `out` after its position is discarded.

    Raises `VhdTooLarge` beyond 2040 GiB and `ValueError` for malformed extents.
    The output is complete only when this returns.
    """
    check_size(size)
    code = KIND_CODES.get(kind)
    if code is None:
        raise ValueError(f"unknown VHD kind {kind!r}")
    if (parent is None) != (code != DIFFERENCING):
        raise ValueError("a parent is required for, and only for, a differencing VHD")
    if parent is not None and parent.size != size:
        raise ValueError(f"parent size {parent.size} differs from the disk size {size}")
    if code != FIXED and (
        not MIN_WRITE_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1)
    ):
        raise ValueError(f"VHD block size {block_size} is not a power of two in 4 KiB..256 MiB")
    stamp = vhd_time((timestamp or datetime.now().astimezone()).timestamp())
    ident = uuid or uuidlib.uuid4()
    extents = _checked(size, blocks)
    base = out.tell()
    if out.seekable():
        out.truncate(base)
    if code == FIXED:
        footer = Footer(kind=FIXED, current_size=size, uuid=ident, timestamp=stamp)
        _write_fixed(out, size, extents)
        out.write(footer.pack())
        return VhdInfo(kind, size, ident, stamp, None, 0, size + FOOTER_SIZE, None)
    if not out.seekable():
        raise ValueError("a dynamic or differencing VHD needs a seekable output")
    return _write_sparse(out, base, size, extents, code, block_size, parent, ident, stamp)


def _write_fixed(out: BinaryIO, size: int, extents: Iterable[tuple[int, Data]]) -> None:
    cursor = 0
    sparse = out.seekable()
    for offset, data in extents:
        gap = offset - cursor
        if isinstance(data, Zeros):
            gap += data.length
        if gap and sparse:
            out.seek(gap, os.SEEK_CUR)
        else:
            _write_zeros(out, gap)
        if not isinstance(data, Zeros):
            out.write(data)
        cursor = offset + _length(data)
    if sparse and cursor < size:
        out.seek(size - cursor, os.SEEK_CUR)
    else:
        _write_zeros(out, size - cursor)


def _locator_data(parent: ParentInfo) -> list[tuple[bytes, bytes]]:
    found = []
    for code, path in ((W2KU, parent.absolute_path), (W2RU, parent.relative_path)):
        data = path.encode("utf-16-le")
        if not data or len(data) > 64 << 10:
            raise ValueError(f"VHD parent path {path!r} is empty or too long")
        found.append((code, data))
    if len(PureWindowsPath(parent.name).name.encode("utf-16-be")) > 512:
        raise ValueError("VHD parent name longer than 256 UTF-16 units")
    return found


def _round(n: int) -> int:
    return -(-n // SECTOR) * SECTOR


def _write_sparse(
    out: BinaryIO,
    base: int,
    size: int,
    extents: Iterable[tuple[int, Data]],
    code: int,
    block_size: int,
    parent: ParentInfo | None,
    ident: uuidlib.UUID,
    stamp: int,
) -> VhdInfo:
    nblocks = -(-size // block_size)
    header_at = FOOTER_SIZE
    cursor = header_at + HEADER_SIZE
    locators: list[Locator] = []
    payloads: list[bytes] = []
    if parent is not None:
        for lcode, text in _locator_data(parent):
            space = _round(len(text))
            locators.append(Locator(lcode, space, len(text), cursor))
            payloads.append(text + bytes(space - len(text)))
            cursor += space
    table_at = cursor
    first_block = table_at + _round(nblocks * 4)
    bm_size = bitmap_size(block_size)
    bat = array("I", [UNALLOCATED]) * nblocks
    end = first_block  # where the next block goes, relative to base
    out.seek(base + end)
    allocated = 0

    pending: list[tuple[int, Data]] = []  # (offset in block, data) of the current block
    current = -1
    bitmap = bytearray(bm_size)

    def flush() -> None:
        nonlocal end, allocated
        if current < 0 or not pending:
            return
        if code == DYNAMIC and all(isinstance(d, Zeros) for _, d in pending):
            return  # an unallocated dynamic block reads as zeros already
        if code == DYNAMIC:
            out.write(b"\xff" * bm_size)
        else:
            out.write(bitmap)
        # The output was truncated at the start: ranges skipped with a seek are
        # file holes that read as zeros, so zero runs cost no disk space.
        pos = 0
        for in_off, data in pending:
            n = _length(data)
            if isinstance(data, Zeros):
                out.seek(in_off - pos + n, os.SEEK_CUR)
            else:
                out.seek(in_off - pos, os.SEEK_CUR)
                _write_sparse_data(out, data)
            pos = in_off + n
        out.seek(block_size - pos, os.SEEK_CUR)
        bat[current] = end // SECTOR  # offsets count from the VHD's first byte
        end += bm_size + block_size
        allocated += 1

    for offset, data in extents:
        pos = offset
        stop = offset + _length(data)
        view = None if isinstance(data, Zeros) else memoryview(data).cast("B")
        while pos < stop:
            index = pos // block_size
            if index != current:
                flush()
                current = index
                pending = []
                bitmap = bytearray(bm_size)
            in_off = pos - index * block_size
            n = min(block_size - in_off, stop - pos)
            if view is None:
                pending.append((in_off, Zeros(n)))
            else:
                pending.append((in_off, view[pos - offset : pos - offset + n]))
            if code == DIFFERENCING:
                _set_bits(bitmap, in_off // SECTOR, n // SECTOR)
            pos += n
    flush()

    footer = Footer(
        kind=code, current_size=size, uuid=ident, timestamp=stamp, data_offset=header_at
    )
    packed = footer.pack()
    out.write(packed)
    header = DynamicHeader(
        table_offset=table_at,
        max_table_entries=nblocks,
        block_size=block_size,
        parent_uuid=parent.uuid if parent else None,
        parent_timestamp=parent.timestamp if parent else 0,
        parent_name=PureWindowsPath(parent.name).name if parent else "",
        locators=tuple(locators),
    )
    out.seek(base)
    out.write(packed)
    out.write(header.pack())
    for payload in payloads:
        out.write(payload)
    if sys.byteorder == "little":
        bat.byteswap()
    out.write(bat.tobytes())
    out.write(bytes(first_block - table_at - nblocks * 4))
    out.seek(base + end + FOOTER_SIZE)
    kind: Kind = "dynamic" if code == DYNAMIC else "differencing"
    return VhdInfo(
        kind,
        size,
        ident,
        stamp,
        block_size,
        allocated,
        end + FOOTER_SIZE,
        parent.uuid if parent else None,
    )
