"""Compression of chunk payloads with zstd, skipped where it does not pay.

A sealed chunk's plaintext starts with one byte telling how the rest is
stored, so every blob is self-describing: 0 = raw, 1 = zstd frame. How a
writer chooses is its own business (readers only read the flag):

- `always`: compress every chunk at the repository's level and keep the
  frame if it saves at least MIN_SAVING (the behaviour before modes existed);
- `auto` (the default): a chunk of TRIAL_MIN_SIZE bytes or more is first
  tried cheaply: SAMPLES pieces of SAMPLE_SIZE bytes spread evenly over it
  (head and tail included) are compressed together at TRIAL_LEVEL; if they
  do not save MIN_SAVING the chunk is stored raw without compressing it
  whole, else it is compressed as in `always`. Like borg's `auto`, but the
  trial reads 32 KiB of the chunk instead of all of it;
- level 0: never compress.
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

AUTO = "auto"
ALWAYS = "always"
MODES = (AUTO, ALWAYS)
# The trial (`auto`): 8 x 4 KiB at zstd-1 costs ~0.02 CPU-ms per chunk, an
# eighth of zstd-1 alone on 1 MiB of random data (and ~2 % of it on 1 MiB of
# text), and it misses 0.06 % of the saving on the benchmark data: fewer or
# smaller samples missed more for no less CPU (docs/performance.md, "Adaptive
# compression"). Smaller chunks are compressed whole: the trial would read too
# large a share of them.
SAMPLES = 8
SAMPLE_SIZE = 4096
TRIAL_LEVEL = 1
TRIAL_MIN_SIZE = 64 << 10


def compression_mode(value: object) -> str:
    """The writer mode a stored setting names: `always` only when it says so;
    anything else (absent, `auto`, a value a later version may add) is `auto`,
    which readers cannot tell apart from `always` anyway."""
    return ALWAYS if value == ALWAYS else AUTO


class Compressor:
    """Thread-safe: each thread gets its own zstd contexts (the trial's too),
    and the trial's decision depends on the chunk's bytes only."""

    def __init__(self, level: int, mode: str = AUTO) -> None:
        self.level = level
        self.mode = compression_mode(mode)
        self._local = threading.local()

    def _cctx(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            self._local.cctx = cctx
        return cctx

    def _trial_cctx(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "trial", None)
        if cctx is None:
            cctx = zstandard.ZstdCompressor(level=TRIAL_LEVEL, write_content_size=False)
            self._local.trial = cctx
        return cctx

    def _dctx(self) -> zstandard.ZstdDecompressor:
        dctx: zstandard.ZstdDecompressor | None = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = zstandard.ZstdDecompressor()
            self._local.dctx = dctx
        return dctx

    def pack(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the flagged payload: compressed if that saves enough, else raw."""
        if self.level > 0 and len(data) >= 64 and self.worth_compressing(data):
            compressed = self._cctx().compress(data)
            if len(compressed) <= len(data) * (1 - MIN_SAVING):
                return _ZSTD_PREFIX + compressed
        return b"".join((_RAW_PREFIX, data))

    def worth_compressing(self, data: bytes | bytearray | memoryview) -> bool:
        """False when the mode is `auto` and the chunk's samples (see the module
        docstring) do not save MIN_SAVING: the chunk is then stored raw without
        being compressed whole. A compressible region that no sample touches is
        missed (stored raw); one that a sample touches pulls the estimate down."""
        size = len(data)
        if self.mode != AUTO or size < TRIAL_MIN_SIZE:
            return True
        view = memoryview(data).cast("B")
        step = (size - SAMPLE_SIZE) // (SAMPLES - 1)
        sample = b"".join(view[i * step : i * step + SAMPLE_SIZE] for i in range(SAMPLES))
        trial = self._trial_cctx().compress(sample)
        return len(trial) <= len(sample) * (1 - MIN_SAVING)

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
