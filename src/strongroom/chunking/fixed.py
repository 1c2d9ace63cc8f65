"""Fixed-size chunking for block data: chunk k covers [k*size, (k+1)*size)."""

from __future__ import annotations

from collections.abc import Iterator

from strongroom.chunking.base import Stream


class FixedChunker:
    def __init__(self, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("block size must be a power of two")
        self.max_size = size
        self._buf = bytearray(size)

    def chunks(self, stream: Stream) -> Iterator[memoryview]:
        view = memoryview(self._buf)
        while True:
            filled = 0
            while filled < len(view):
                n = stream.readinto(view[filled:])
                if not n:
                    break
                filled += n
            if filled:
                yield view[:filled]
            if filled < len(view):
                return
