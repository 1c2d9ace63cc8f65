"""Zero runs in buffers: what restore and export leave as file holes.

Standard library only, so every layer may use it. Comparisons are done on
bytes slices: CPython compares those with memcmp (~17 GB/s here), while a
memoryview comparison goes element by element (~0.5 GB/s).
"""

from __future__ import annotations

from collections.abc import Iterator

ZEROS = bytes(1 << 20)
PIECE = 64 * 1024  # granularity of holes left in written files


def nonzero_runs(
    data: bytes | bytearray | memoryview, piece: int = PIECE
) -> Iterator[tuple[int, int]]:
    """(start, end) of the runs of `data` that are not all-zero `piece`-sized pieces."""
    whole = data if isinstance(data, bytes) else bytes(data)
    start = None  # first piece of the current non-zero run
    for pos in range(0, len(whole), piece):
        chunk = whole[pos : pos + piece]
        if chunk == ZEROS[: len(chunk)]:
            if start is not None:
                yield start, pos
                start = None
        elif start is None:
            start = pos
    if start is not None:
        yield start, len(whole)
