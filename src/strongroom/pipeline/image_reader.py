"""Random access to a block recovery point without restoring it.

`PointReader` serves byte ranges of a point's virtual disk straight from the
repository: a block is loaded once (concurrent readers of the same block wait
for the one load), kept in an LRU cache, and a reader moving forward through
the disk triggers read-ahead of the next blocks on a small pool, so that a
sequential consumer (`qemu-img convert`, `nbdcopy`, a booting VM) rarely waits
for a decryption. Thread-safe: the NBD server calls it from several threads.
"""

from __future__ import annotations

import functools
import io
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from strongroom.model.blockmap import BlockMap
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore
from strongroom.sources.image_files.view import seek_position


class PointReader:
    def __init__(
        self,
        repo: ChunkStore,
        block_map: BlockMap,
        cache_bytes: int = 64 << 20,
        readahead: int = 8,
        workers: int = 4,
    ) -> None:
        self.repo = repo
        self.map = block_map
        self.size = block_map.size
        self.block_size = block_map.block_size
        self._capacity = max(4, cache_bytes // block_map.block_size)
        self._readahead = readahead
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._loading: dict[int, Future[bytes]] = {}
        # Reentrant: a future already done runs its callback (_loaded) at once,
        # inside _future, which holds the lock.
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="readahead")
        self._zero = bytes(block_map.block_size)
        self._holes = block_map.hole_mask()
        self._last_block = -2
        self.blocks_loaded = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _load(self, block: int) -> bytes:
        cid = self.map.get(block)
        if cid is None:
            return self._zero[: self.map.extent(block)[1]]
        data = self.repo.load_chunk(cid, BlobType.DATA, self.map.extent(block)[1])
        self.blocks_loaded += 1
        return data

    def _future(self, block: int) -> Future[bytes] | bytes:
        """The cached block, or the future of its load (started if needed). Holds the lock."""
        data = self._cache.get(block)
        if data is not None:
            self._cache.move_to_end(block)
            return data
        fut = self._loading.get(block)
        if fut is None:
            fut = self._pool.submit(self._load, block)
            self._loading[block] = fut
            fut.add_done_callback(functools.partial(self._loaded, block))
        return fut

    def _loaded(self, block: int, fut: Future[bytes]) -> None:
        with self._lock:
            self._loading.pop(block, None)
            if fut.cancelled() or fut.exception() is not None:
                return
            self._cache[block] = fut.result()
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)

    def block(self, block: int) -> bytes:
        if self._holes[block]:  # no load, no cache slot
            return self._zero[: self.map.extent(block)[1]]
        with self._lock:
            got = self._future(block)
            sequential = block in (self._last_block, self._last_block + 1)
            self._last_block = block
            if sequential:
                end = min(block + 1 + self._readahead, self.map.blocks)
                for nxt in range(block + 1, end):
                    if not self._holes[nxt]:
                        self._future(nxt)
        return got if isinstance(got, bytes) else got.result()

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the virtual disk (clipped at its end)."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        if first == last:
            start = offset - first * bs
            return self.block(first)[start : start + length]
        parts = []
        for block in range(first, last + 1):
            data = self.block(block)
            lo = max(offset - block * bs, 0)
            hi = min(offset + length - block * bs, len(data))
            parts.append(memoryview(data)[lo:hi])
        return b"".join(parts)

    def extents(self, offset: int, length: int) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, is_hole) covering the range, from the map alone."""
        end = min(offset + length, self.size)
        bs = self.block_size
        pos = offset
        holes = self._holes
        while pos < end:
            block = pos // bs
            hole = bool(holes[block])
            nxt = block + 1
            while nxt * bs < end and bool(holes[nxt]) == hole:
                nxt += 1
            stop = min(nxt * bs, end)
            yield pos, stop - pos, hole
            pos = stop

    def stream(self) -> PointStream:
        return PointStream(self)


class PointStream(io.RawIOBase):
    """A seekable read-only file object over a PointReader (for file-system readers)."""

    def __init__(self, reader: PointReader) -> None:
        self._reader = reader
        self._pos = 0
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = seek_position(self._pos, self._reader.size, offset, whence)
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._reader.read(self._pos, len(buffer))
        n = len(data)
        memoryview(buffer)[:n] = data
        self._pos += n
        self.bytes_read += n
        return n
