"""Compression of chunk payloads with zstd, skipped where it does not pay.

A sealed chunk's plaintext starts with one byte telling how the rest is
stored, so every blob is self-describing: 0 = raw, 1 = zstd frame.
"""

from __future__ import annotations

import threading

import zstandard

from strongroom.errors import IntegrityError

RAW = 0
ZSTD = 1
_RAW_PREFIX = bytes([RAW])
_ZSTD_PREFIX = bytes([ZSTD])
# Keep the compressed form only if it saves at least this fraction.
MIN_SAVING = 0.03


class Compressor:
    """Thread-safe: each thread gets its own zstd contexts."""

    def __init__(self, level: int) -> None:
        self.level = level
        self._local = threading.local()

    def _cctx(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            self._local.cctx = cctx
        return cctx

    def _dctx(self) -> zstandard.ZstdDecompressor:
        dctx: zstandard.ZstdDecompressor | None = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = zstandard.ZstdDecompressor()
            self._local.dctx = dctx
        return dctx

    def pack(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the flagged payload: compressed if that saves enough, else raw."""
        if self.level > 0 and len(data) >= 64:
            compressed = self._cctx().compress(data)
            if len(compressed) <= len(data) * (1 - MIN_SAVING):
                return _ZSTD_PREFIX + compressed
        return b"".join((_RAW_PREFIX, data))

    def unpack(self, payload: bytes, max_size: int) -> bytes:
        """The chunk's plaintext, at most `max_size` bytes; IntegrityError otherwise.

        A zstd frame declares its own content size and zstandard allocates what it
        declares: the declaration is checked against `max_size` before anything is
        decompressed, and a frame that declares nothing is refused (strongroom
        always writes the size), so no payload can expand beyond the bound."""
        if not payload:
            raise IntegrityError("empty chunk payload")
        flag = payload[0]
        body = memoryview(payload)[1:]
        if flag == RAW:
            if len(body) > max_size:
                raise IntegrityError(f"chunk holds {len(body)} bytes, more than {max_size}")
            return bytes(body)
        if flag != ZSTD:
            raise IntegrityError(f"unknown chunk payload flag {flag}")
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError:
            raise IntegrityError("chunk is not a zstd frame") from None
        if declared < 0:
            raise IntegrityError("chunk's zstd frame does not declare its size")
        if declared > max_size:
            raise IntegrityError(f"chunk declares {declared} bytes, more than {max_size}")
        try:
            data = self._dctx().decompress(body, max_output_size=max_size)
        except zstandard.ZstdError as err:
            raise IntegrityError(f"chunk does not decompress: {err}") from None
        if len(data) != declared:
            raise IntegrityError(f"chunk decompresses to {len(data)} bytes, not {declared}")
        return data


def declared_size(payload: bytes, max_size: int) -> int:
    """The plaintext size a flagged payload declares (a zstd frame's content
    size, or a raw body's length), without decompressing it; IntegrityError
    when it declares nothing or more than `max_size`. The reader that
    decompresses still checks the size it gets (`Compressor.unpack`)."""
    if not payload:
        raise IntegrityError("empty chunk payload")
    flag = payload[0]
    if flag == RAW:
        size = len(payload) - 1
    elif flag == ZSTD:
        try:
            size = zstandard.frame_content_size(memoryview(payload)[1:])
        except zstandard.ZstdError:
            raise IntegrityError("chunk is not a zstd frame") from None
        if size < 0:
            raise IntegrityError("chunk's zstd frame does not declare its size")
    else:
        raise IntegrityError(f"unknown chunk payload flag {flag}")
    if size > max_size:
        raise IntegrityError(f"chunk declares {size} bytes, more than {max_size}")
    return size
