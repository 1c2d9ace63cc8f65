"""The disk under a file system: a cached, read-only window of a seekable stream."""

from __future__ import annotations

import errno
import io
from collections import OrderedDict
from typing import Any, Protocol


class SeekableReader(Protocol):
    """What `open_filesystem` needs of the disk: a `BinaryIO` or an `io.RawIOBase` will do."""

    def read(self, size: int = -1, /) -> bytes | None: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class DiskView(io.RawIOBase):
    """A read-only window [start, start + size) of a seekable stream, with a small block cache.

    The cache (BLOCKS blocks of BLOCK bytes) turns the many tiny reads of the
    libraries into a few aligned reads of the stream; large reads bypass it. The
    last exception of the stream is kept in `failure`, because a library calling
    `readinto` from C replaces it with an error of its own.
    """

    BLOCK = 4096
    BLOCKS = 256

    def __init__(self, base: SeekableReader, start: int, size: int) -> None:
        super().__init__()
        self._base, self._start, self.size = base, start, size
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:  # libbfio asks for the size by this name
        return self.size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = seek_position(self._pos, self.size, offset, whence)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        data = self.pread(self._pos, len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def pread(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`; short only at the end of the window."""
        size = max(0, min(size, self.size - offset))
        if size >= self.BLOCK:
            return self._fetch(offset, size)
        parts = []
        while size > 0:
            index, skip = divmod(offset, self.BLOCK)
            part = self._block(index)[skip : skip + size]
            if not part:
                break
            parts.append(part)
            offset, size = offset + len(part), size - len(part)
        return b"".join(parts)

    def _block(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is None:
            start = index * self.BLOCK
            block = self._cache[index] = self._fetch(start, min(self.BLOCK, self.size - start))
            if len(self._cache) > self.BLOCKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return block

    def _fetch(self, offset: int, size: int) -> bytes:
        try:
            self._base.seek(self._start + offset)
            parts: list[bytes] = []
            while size > 0:
                part = self._base.read(size)
                if not part:
                    break
                parts.append(part)
                size -= len(part)
            return b"".join(parts)
        except BaseException as exc:
            self.failure = exc
            raise


def seek_position(pos: int, size: int, offset: int, whence: int) -> int:
    """Where a seek lands in a stream of `size` bytes at `pos`; the file readers share it."""
    base = {io.SEEK_SET: 0, io.SEEK_CUR: pos, io.SEEK_END: size}.get(whence)
    if base is None or base + offset < 0:
        raise OSError(errno.EINVAL, "invalid seek")
    return base + offset
