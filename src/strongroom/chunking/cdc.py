"""Content-defined chunking with FastCDC-2020 (pyfastcdc, Cython, GIL released).

The gear table is keyed with a per-repository seed, so boundaries depend on the
key and chunk sizes do not fingerprint known files (restic #5295).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyfastcdc

from strongroom.chunking.base import Stream


class CdcChunker:
    def __init__(self, min_size: int, avg_size: int, max_size: int, seed: int) -> None:
        self.min_size = min_size
        self.avg_size = avg_size
        self.max_size = max_size
        self._cdc = pyfastcdc.FastCDC(
            avg_size,
            min_size=min_size,
            max_size=max_size,
            seed=seed & ((1 << 62) - 1),  # pyfastcdc shifts it left by one
        )

    def chunks(self, stream: Stream) -> Iterator[memoryview]:
        for chunk in self._cdc.cut_stream(stream):  # type: ignore[arg-type]
            yield chunk.data

    def cut(self, buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Chunks of a buffer in memory (views into it)."""
        for chunk in self._cdc.cut_buf(buf):
            yield chunk.data
