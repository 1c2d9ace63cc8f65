"""Reading fixed, dynamic and differencing VHDs, following the parent chain.

Nothing in the file is trusted. On open, every structure is checked before it
is used: both footer copies (cookie, checksum, agreement), the dynamic header
(cookie, checksum, power-of-two block size, table size against the disk size),
the BAT (inside the file, every allocated block inside the file and overlapping
neither the metadata nor another block), and the parent locators (inside the
file, bounded length). Reads never go past the end of the file, allocations are
bounded by the file size or fixed limits, and the parent chain is bounded in
depth and may not loop. Every problem raises `VhdError` with a one-line message.

The virtual size is the footer's current size (as Hyper-V and libvhdi read
it), not the CHS geometry. In a dynamic disk the sector bitmap is ignored (as
qemu does: allocated blocks hold zeros where unwritten); in a differencing disk
a clear bit sends the read to the parent.
"""

from __future__ import annotations

import os
import sys
import uuid as uuidlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from heapq import merge
from itertools import pairwise
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import TracebackType
from typing import NamedTuple

import numpy as np

from strongroom.formats.vhd.structs import (
    DIFFERENCING,
    DYNAMIC,
    FIXED,
    FOOTER_SIZE,
    HEADER_SIZE,
    KIND_NAMES,
    MAX_LOCATOR_BYTES,
    MAX_SIZE,
    SECTOR,
    UNALLOCATED,
    W2KU,
    W2RU,
    DynamicHeader,
    Footer,
    VhdError,
    bitmap_size,
)

MAX_BAT_ENTRIES = 1 << 24  # 64 MiB of table: 32 TiB of 2 MiB blocks
MAX_CHAIN_DEPTH = 64
_BITMAP_CACHE = 64


class VhdExtent(NamedTuple):
    """A byte range of the virtual disk; unallocated ranges read as zeros."""

    offset: int
    length: int
    allocated: bool


@dataclass(frozen=True)
class ParentRef:
    """What a differencing disk says about its parent, for a `ParentResolver`."""

    uuid: uuidlib.UUID
    timestamp: int
    name: str
    locators: tuple[tuple[bytes, str], ...]  # (platform code, decoded path)


ParentResolver = Callable[[Path, ParentRef], Path]


def default_parent_resolver(child: Path, ref: ParentRef) -> Path:
    """Find the parent file: relative locators (from the child's folder), absolute ones,
    then the parent's file name in the child's folder. Raises `VhdError` if none exists."""
    folder = child.parent
    tried: list[Path] = []
    names: list[str] = []
    for code, text in sorted(ref.locators, key=lambda loc: loc[0] != W2RU):
        posix = text.replace("\\", "/")
        if code in (W2RU, b"Wi2r") and not PurePosixPath(posix).is_absolute():
            tried.append(folder / posix)
        elif code in (W2KU, b"Wi2k") and posix.startswith("/"):
            tried.append(Path(posix))
        elif code == b"MacX" and posix.startswith("file://"):
            tried.append(Path(posix[len("file://") :]))
        names.append(PureWindowsPath(text).name)
    names.append(PureWindowsPath(ref.name).name)
    tried.extend(folder / n for n in names if n and n not in (".", ".."))
    for path in tried:
        if path.is_file():
            return path
    label = ref.name or str(ref.uuid)
    raise VhdError(f"parent VHD {label!r} of {child.name} not found next to it or at its locators")


def read_footer(path: str | os.PathLike[str]) -> Footer:
    """The validated footer at the end of the VHD at `path`."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < FOOTER_SIZE:
            raise VhdError(f"{os.fspath(path)} is too short to be a VHD")
        return Footer.unpack(os.pread(f.fileno(), FOOTER_SIZE, size - FOOTER_SIZE))


def open_vhd(
    path: str | os.PathLike[str],
    parent_resolver: ParentResolver | None = default_parent_resolver,
) -> VhdReader:
    """Open and validate the VHD at `path` and, if differencing, its whole parent chain.

    With `parent_resolver=None` a differencing disk opens alone: its metadata can
    be inspected, but reading a sector that lives in the parent raises `VhdError`.
    Raises `VhdError` for any damage, a missing parent, or a parent whose unique id
    differs from the one the child records.
    """
    return _open(Path(path), parent_resolver, set(), 0)


def _open(
    path: Path, resolver: ParentResolver | None, seen: set[tuple[int, int]], depth: int
) -> VhdReader:
    if depth > MAX_CHAIN_DEPTH:
        raise VhdError(f"VHD parent chain is longer than {MAX_CHAIN_DEPTH}")
    try:
        f = open(path, "rb")  # noqa: SIM115 -- owned by the reader, closed by close()
    except OSError as e:
        raise VhdError(f"cannot open VHD {path}: {e.strerror}") from e
    reader: VhdReader | None = None
    try:
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) in seen:
            raise VhdError(f"VHD parent chain loops back to {path}")
        seen.add((st.st_dev, st.st_ino))
        try:
            reader = VhdReader(path, f)
        except VhdError as e:
            if path.name in str(e):
                raise
            raise VhdError(f"{path.name}: {e}") from None
        if reader.kind == "differencing" and resolver is not None:
            ref = reader.parent_ref
            assert ref is not None
            parent = _open(resolver(path, ref), resolver, seen, depth + 1)
            reader.parent = parent
            if parent.uuid != ref.uuid:
                raise VhdError(
                    f"parent {parent.path.name} of {path.name} has id {parent.uuid},"
                    f" but the child expects {ref.uuid}"
                )
            if parent.size != reader.size:
                raise VhdError(
                    f"parent {parent.path.name} of {path.name} holds {parent.size} bytes,"
                    f" the child {reader.size}: a chain cannot change size"
                )
        return reader
    except BaseException:
        if reader is not None:
            reader.close()
        else:
            f.close()
        raise


class VhdReader:
    """A validated VHD opened for reading; closes its file and its parents' on `close()`.

    Reads use `os.pread`, so one reader may serve several threads.
    """

    def __init__(self, path: Path, f: object) -> None:
        self.path = path
        self._file = f
        self._fd: int = f.fileno()  # type: ignore[attr-defined]
        self.parent: VhdReader | None = None
        self.parent_ref: ParentRef | None = None
        self.header: DynamicHeader | None = None
        self._bat = array("I")
        self._bitmaps: dict[int, bytes] = {}
        self._file_size = os.fstat(self._fd).st_size
        if self._file_size < FOOTER_SIZE:
            raise VhdError(f"{path.name} is too short to be a VHD")
        tail = self._pread(self._file_size - FOOTER_SIZE, FOOTER_SIZE)
        self.footer = Footer.unpack(tail)
        self.size = self.footer.current_size
        self.uuid = self.footer.uuid
        self.kind = KIND_NAMES[self.footer.kind]
        self.block_size: int | None = None
        if self.footer.kind == FIXED:
            if self.size > self._file_size - FOOTER_SIZE:
                raise VhdError(f"fixed VHD {path.name} is truncated: data shorter than its size")
        else:
            self._open_sparse()

    @property
    def parent_uuid(self) -> uuidlib.UUID | None:
        return self.parent_ref.uuid if self.parent_ref else None

    # --- validation ---------------------------------------------------------

    def _open_sparse(self) -> None:
        name, fsize = self.path.name, self._file_size
        data_end = fsize - FOOTER_SIZE
        if self.size > MAX_SIZE:
            raise VhdError(f"VHD {name} claims {self.size} bytes, more than 2040 GiB")
        if data_end < FOOTER_SIZE + HEADER_SIZE:
            raise VhdError(f"VHD {name} is truncated: no room for its dynamic header")
        head = Footer.unpack(self._pread(0, FOOTER_SIZE), "footer copy at offset 0")
        f = self.footer
        if (head.kind, head.current_size, head.uuid, head.data_offset) != (
            f.kind,
            f.current_size,
            f.uuid,
            f.data_offset,
        ):
            raise VhdError(f"VHD {name}: footer copy at offset 0 disagrees with the footer")
        if not FOOTER_SIZE <= f.data_offset <= data_end - HEADER_SIZE:
            raise VhdError(f"VHD {name}: dynamic header offset {f.data_offset} outside the file")
        h = DynamicHeader.unpack(self._pread(f.data_offset, HEADER_SIZE))
        self.header = h
        bs = self.block_size = h.block_size
        needed = -(-self.size // bs)
        if h.max_table_entries < needed:
            raise VhdError(
                f"VHD {name}: BAT has {h.max_table_entries} entries, fewer than its {needed} blocks"
            )
        if h.max_table_entries > MAX_BAT_ENTRIES:
            raise VhdError(f"VHD {name}: BAT of {h.max_table_entries} entries is too large")
        table_len = h.max_table_entries * 4
        if h.table_offset < FOOTER_SIZE or h.table_offset + table_len > data_end:
            raise VhdError(f"VHD {name}: BAT lies outside the file")
        self._bat = array("I")
        self._bat.frombytes(self._pread(h.table_offset, needed * 4))
        if sys.byteorder == "little":
            self._bat.byteswap()
        meta: list[tuple[int, int, str]] = [
            (0, FOOTER_SIZE, "the footer copy"),
            (f.data_offset, f.data_offset + HEADER_SIZE, "the dynamic header"),
            (h.table_offset, h.table_offset + -(-table_len // SECTOR) * SECTOR, "the BAT"),
        ]
        if self.footer.kind == DIFFERENCING:
            meta.extend(self._read_locators(h, data_end))
        meta.sort()
        for (_s1, e1, l1), (s2, _e2, l2) in pairwise(meta):
            if s2 < e1:
                raise VhdError(f"VHD {name}: {l1} overlaps {l2}")
        self._check_blocks(meta, data_end)

    def _check_blocks(self, meta: list[tuple[int, int, str]], data_end: int) -> None:
        assert self.block_size is not None
        span = bitmap_size(self.block_size) + self.block_size
        # A numpy array, not a list: a hostile table of millions of entries
        # costs 8 bytes each here, not a Python int and a list slot.
        bat = np.frombuffer(self._bat, dtype=np.uint32)
        starts = np.sort(bat[bat != UNALLOCATED].astype(np.uint64) * SECTOR)
        name = self.path.name
        if len(starts) and int(starts[-1]) + span > data_end:
            raise VhdError(f"VHD {name}: a BAT entry points past the end of the file")
        for start, end, label in meta:
            i = int(np.searchsorted(starts, max(start - span, 0), side="right"))
            if i < len(starts) and int(starts[i]) < end:
                raise VhdError(f"VHD {name}: a data block overlaps {label}")
        if len(starts) > 1:
            gaps = np.diff(starts)
            if int(gaps.min()) < span:
                at = int(starts[int(np.argmin(gaps)) + 1])
                raise VhdError(f"VHD {name}: two blocks overlap at offset {at}")

    def _read_locators(self, h: DynamicHeader, data_end: int) -> list[tuple[int, int, str]]:
        name = self.path.name
        regions: list[tuple[int, int, str]] = []
        paths: list[tuple[bytes, str]] = []
        for i, loc in enumerate(h.locators):
            if loc.code == b"\0\0\0\0" or loc.data_length == 0:
                continue
            if loc.data_length > MAX_LOCATOR_BYTES or loc.data_length > loc.data_space * SECTOR:
                raise VhdError(f"VHD {name}: parent locator {i} has a bad length")
            end = loc.data_offset + loc.data_length
            if loc.data_offset < FOOTER_SIZE or end > data_end:
                raise VhdError(f"VHD {name}: parent locator {i} lies outside the file")
            regions.append((loc.data_offset, end, f"parent locator {i}"))
            raw = self._pread(loc.data_offset, loc.data_length)
            if loc.code in (W2KU, W2RU):
                text = raw.decode("utf-16-le", errors="replace")
            elif loc.code in (b"Wi2k", b"Wi2r"):
                text = raw.decode("latin-1")
            elif loc.code == b"MacX":
                text = raw.decode("utf-8", errors="replace")
            else:
                continue
            paths.append((loc.code, text.split("\0", 1)[0]))
        assert h.parent_uuid is not None
        self.parent_ref = ParentRef(h.parent_uuid, h.parent_timestamp, h.parent_name, tuple(paths))
        return regions

    # --- reading ------------------------------------------------------------

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise VhdError(f"VHD {self.path.name} is truncated: short read at offset {offset}")
        return data

    def _from_parent(self, offset: int, length: int) -> bytes:
        if self.parent is None:
            raise VhdError(f"differencing VHD {self.path.name} was opened without its parent")
        data = self.parent.read(offset, length)
        return data + bytes(length - len(data))  # a smaller parent reads as zeros beyond

    def _bitmap(self, index: int, at: int) -> bytes:
        cached = self._bitmaps.get(index)
        if cached is None:
            assert self.block_size is not None
            cached = self._pread(at, bitmap_size(self.block_size))
            if len(self._bitmaps) >= _BITMAP_CACHE:
                self._bitmaps.pop(next(iter(self._bitmaps)))
            self._bitmaps[index] = cached
        return cached

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes of the virtual disk at `offset`, fewer only at the disk's end."""
        if offset < 0 or length < 0:
            raise ValueError("negative VHD read offset or length")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if self.block_size is None:
            return self._pread(offset, end - offset)
        bs = self.block_size
        pieces: list[bytes] = []
        pos = offset
        while pos < end:
            index = pos // bs
            in_off = pos - index * bs
            n = min(bs - in_off, end - pos)
            entry = self._bat[index]
            if entry == UNALLOCATED:
                if self.footer.kind == DYNAMIC:
                    pieces.append(bytes(n))
                else:
                    pieces.append(self._from_parent(pos, n))
            else:
                bitmap_at = entry * SECTOR
                data_at = bitmap_at + bitmap_size(bs)
                # The sector bitmap counts in dynamic disks too: a clear bit
                # reads as zeros (as Hyper-V and blktap read it), whatever
                # bytes lie in the block there.
                bitmap = self._bitmap(index, bitmap_at)
                for a, b, mine in _runs(bitmap, in_off, in_off + n):
                    if mine:
                        pieces.append(self._pread(data_at + a, b - a))
                    elif self.footer.kind == DYNAMIC:
                        pieces.append(bytes(b - a))
                    else:
                        pieces.append(self._from_parent(index * bs + a, b - a))
            pos += n
        return b"".join(pieces)

    def _own_ranges(self) -> Iterator[tuple[int, int]]:
        if self.block_size is None:
            yield 0, self.size
            return
        bs = self.block_size
        for i, entry in enumerate(self._bat):
            if entry != UNALLOCATED:
                yield i * bs, min((i + 1) * bs, self.size)

    def _chain_ranges(self) -> Iterator[tuple[int, int]]:
        layers: list[Iterator[tuple[int, int]]] = []
        layer: VhdReader | None = self
        while layer is not None:
            layers.append(layer._own_ranges())
            layer = layer.parent if layer.footer.kind == DIFFERENCING else None
        return merge(*layers)

    def extents(self) -> Iterator[VhdExtent]:
        """The disk as consecutive extents, allocated (in this file or a parent) or not.

        Block granularity: an allocated extent may contain zeros; an unallocated one
        reads as zeros for certain.
        """
        pos = 0
        cur_start, cur_end = -1, -1
        for start, end in self._chain_ranges():
            start, end = min(start, self.size), min(end, self.size)
            if start >= end:
                continue
            if start <= cur_end:
                cur_end = max(cur_end, end)
                continue
            if cur_end > cur_start:
                yield VhdExtent(cur_start, cur_end - cur_start, True)
                pos = cur_end
            if start > pos:
                yield VhdExtent(pos, start - pos, False)
            cur_start, cur_end = start, end
        if cur_end > cur_start:
            yield VhdExtent(cur_start, cur_end - cur_start, True)
            pos = cur_end
        if pos < self.size:
            yield VhdExtent(pos, self.size - pos, False)

    def close(self) -> None:
        """Close this file and its parents'; idempotent."""
        self._file.close()  # type: ignore[attr-defined]
        if self.parent is not None:
            self.parent.close()

    def __enter__(self) -> VhdReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _runs(bitmap: bytes, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """Byte ranges [a, b) within [start, end) of one block whose sectors share a bitmap bit."""
    first, last = start // SECTOR, (end - 1) // SECTOR
    run_start, run_bit = start, None
    s = first
    while s <= last:
        byte = bitmap[s // 8]
        if s % 8 == 0 and s + 8 <= last + 1 and byte in (0, 0xFF):
            bit, step = byte == 0xFF, 8
        else:
            bit, step = bool(byte & (0x80 >> (s % 8))), 1
        if run_bit is None:
            run_bit = bit
        elif bit != run_bit:
            yield run_start, s * SECTOR, run_bit
            run_start, run_bit = s * SECTOR, bit
        s += step
    if run_bit is not None:
        yield run_start, end, run_bit
