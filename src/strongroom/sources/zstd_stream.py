"""zstd streams decompressed with their truncation detected.

`zstandard`'s stream reader ends quietly where its input ends, inside a frame
or not; a seed archive cut short must be refused instead. So frames are fed to
a decompression object in small pieces: a frame's end is known (`eof`), and
one piece expands to at most ~32 MiB (a 4-byte RLE block is 128 KiB), which
bounds the memory a hostile stream can take.

The repository owns compression (the import contract protects `zstandard`);
this module is the one exception, for reading compressed archives.
"""

from __future__ import annotations

import io
from typing import IO, Any

import zstandard

ZstdError = zstandard.ZstdError


class ZstdReader(io.RawIOBase):
    """zstd frames, decompressed; EOFError if the input ends inside a frame."""

    _FEED = 1024  # input per step: at most ~32 MiB of output (RLE blocks)

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj: Any = None  # the current frame's decompressor, None between frames
        self._out = memoryview(b"")
        self._carry = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if self._obj is not None and self._obj.eof:
                # Input past this frame's end belongs to the next frame.
                self._carry = self._obj.unused_data + self._carry
                self._obj = None
            if self._carry:
                piece, self._carry = self._carry[: self._FEED], self._carry[self._FEED :]
            else:
                piece = self._raw.read(self._FEED)
            if not piece:
                if self._obj is not None:
                    raise EOFError("the zstd stream ends inside a frame (truncated)")
                return 0
            if self._obj is None:
                self._obj = self._dctx.decompressobj()
            self._out = memoryview(self._obj.decompress(piece))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n
