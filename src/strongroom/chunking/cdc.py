"""Content-defined chunking with FastCDC-2020 (pyfastcdc, Cython, GIL released).

The gear table is keyed with a per-repository seed, so boundaries depend on the
key and chunk sizes do not fingerprint known files (restic #5295).

pyfastcdc (~25 ms to import) loads when a chunker first cuts: a backup whose
files are all unchanged or small never does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from strongroom.chunking.base import Stream

if TYPE_CHECKING:
    import pyfastcdc


class CdcChunker:
    def __init__(self, min_size: int, avg_size: int, max_size: int, seed: int) -> None:
        self.min_size = min_size
        self.avg_size = avg_size
        self.max_size = max_size
        self._seed = seed & ((1 << 62) - 1)  # pyfastcdc shifts it left by one
        self._fastcdc: pyfastcdc.FastCDC | None = None

    @property
    def _cdc(self) -> pyfastcdc.FastCDC:
        if self._fastcdc is None:
            import pyfastcdc

            self._fastcdc = pyfastcdc.FastCDC(
                self.avg_size, min_size=self.min_size, max_size=self.max_size, seed=self._seed
            )
        return self._fastcdc

    def chunks(self, stream: Stream) -> Iterator[memoryview]:
        for chunk in self._cdc.cut_stream(stream):  # type: ignore[arg-type]
            yield chunk.data

    def cut(self, buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Chunks of a buffer in memory (views into it)."""
        for chunk in self._cdc.cut_buf(buf):
            yield chunk.data
