"""Block sources: a virtual disk to read, with what it knows of its holes.

Three readers share one small protocol:
- `RawSource`: a raw image file or a block device, read with pread; a file's
  holes come from SEEK_DATA/SEEK_HOLE.
- `NbdSource`: an NBD export (ours to open or the user's URI); holes come from
  the `base:allocation` context, and further contexts (dirty bitmaps,
  allocation depth) feed the change trackers.
- qemu image formats are served by a `qemu-nbd` child and read as NBD
  (`sources/qemu.py`: the child in `sources/qemu_nbd.py`, probing with
  qemu-img in `sources/qemu_img.py`).

Every source counts the bytes it actually read (`bytes_read`), which is what
the change-tracking tests hold the incremental backups to.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from strongroom.errors import SourceError
from strongroom.nbd.client import NbdClient

BLKGETSIZE64 = 0x80081272
NBD_STATE_HOLE = 1
NBD_STATE_ZERO = 2
NBD_STATE_DIRTY = 1
ALLOCATION = "base:allocation"


@dataclass(frozen=True)
class Extent:
    """A byte range of the source; `zero` means it reads as zeros (no need to read)."""

    offset: int
    length: int
    zero: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.length


Data = bytes | bytearray | memoryview


class BlockSource(Protocol):
    """A readable virtual disk. Used by one thread; `close` is idempotent."""

    description: str
    size: int

    @property
    def bytes_read(self) -> int:
        """Bytes delivered by the source so far."""
        ...

    def allocation(self) -> Iterator[Extent]:
        """Extents covering [0, size) in order; unknown regions are data."""
        ...

    def read_blocks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Data]]:
        """Read (offset, length) ranges; yields (offset, data) in request order.

        Raises SourceError naming the offset when the source fails to read."""
        ...

    def close(self) -> None: ...


class RawSource:
    """A raw image file or a block device; `size` reads only its first bytes
    (a fixed VHD's disk without its footer)."""

    def __init__(self, path: str, size: int | None = None) -> None:
        self.description = os.path.abspath(path)
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise SourceError(f"{path}: cannot open: {err.strerror}") from None
        st = os.fstat(self._fd)
        self.is_device = stat.S_ISBLK(st.st_mode)
        if self.is_device:
            buf = fcntl.ioctl(self._fd, BLKGETSIZE64, b"\0" * 8)
            self.size = int(struct.unpack("Q", buf)[0])
        elif stat.S_ISREG(st.st_mode):
            self.size = st.st_size
        else:
            os.close(self._fd)
            raise SourceError(f"{path}: not a regular file or block device")
        if size is not None:
            self.size = min(self.size, size)
        self.bytes_read = 0
        try:
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass

    def allocation(self) -> Iterator[Extent]:
        if self.is_device:
            yield Extent(0, self.size)
            return
        pos = 0
        while pos < self.size:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole remains
                    yield Extent(pos, self.size - pos, zero=True)
                    return
                yield Extent(pos, self.size - pos)  # no SEEK_DATA here: all data
                return
            if data > pos:
                yield Extent(pos, data - pos, zero=True)
            hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), self.size)
            yield Extent(data, hole - data)
            pos = hole

    def read_blocks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Data]]:
        for offset, length in ranges:
            buf = bytearray(length)
            got = 0
            while got < length:
                try:
                    n = os.preadv(self._fd, [memoryview(buf)[got:]], offset + got)
                except OSError as err:
                    raise SourceError(
                        f"{self.description}: read error at offset {offset + got}: {err.strerror}"
                    ) from None
                if n == 0:
                    raise SourceError(
                        f"{self.description}: ended at {offset + got} while reading "
                        f"(the source shrank during the backup?)"
                    )
                got += n
            self.bytes_read += length
            yield offset, buf

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class NbdSource:
    """An NBD export read through our client, with pipelined reads."""

    def __init__(
        self, uri: str, contexts: Iterable[str] = (), description: str | None = None
    ) -> None:
        self.uri = uri
        self.description = description or uri
        wanted = [ALLOCATION, *[c for c in contexts if c != ALLOCATION]]
        self.client = NbdClient.connect(uri, meta_contexts=wanted)
        self.size = self.client.size
        self._read_base = 0

    @property
    def bytes_read(self) -> int:
        return self.client.bytes_read - self._read_base

    def has_context(self, name: str) -> bool:
        return self.client.has_context(name)

    def status(self, context: str) -> Iterator[tuple[int, int, int]]:
        """(offset, length, flags) of a metadata context over the whole export."""
        step = 1 << 30  # servers cap replies; ask in 1 GiB windows
        pos = 0
        while pos < self.size:
            length = min(step, self.size - pos)
            extents = self.client.block_status(context, pos, length)  # NbdError names the URI
            for e in extents:
                yield e.offset, e.length, e.flags
            pos += length

    def dirty_extents(self, bitmaps: Iterable[str]) -> list[tuple[int, int]] | None:
        """(offset, length) of everything the exported dirty bitmaps mark;
        None when one of them is not exported."""
        extents: list[tuple[int, int]] = []
        for name in bitmaps:
            context = f"qemu:dirty-bitmap:{name}"
            if not self.has_context(context):
                return None
            extents += [(o, n) for o, n, flags in self.status(context) if flags & NBD_STATE_DIRTY]
        return extents

    def allocation(self) -> Iterator[Extent]:
        if not self.client.has_context(ALLOCATION):
            yield Extent(0, self.size)
            return
        for offset, length, flags in self.status(ALLOCATION):
            yield Extent(offset, length, zero=bool(flags & NBD_STATE_ZERO))

    def read_blocks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Data]]:
        yield from self.client.read_many(ranges, depth=8)  # NbdError names the URI

    def close(self) -> None:
        self.client.close()
