"""What the server serves: the `Export` protocol and an in-memory implementation.

An export is a read-only byte range with a name. `extents` tells holes from
data; the server uses it for `base:allocation` block status and to answer
reads of holes with NBD_REPLY_TYPE_OFFSET_HOLE instead of zeroes on the wire.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Protocol

Segment = tuple[int, int, bool]  # (offset, length, is_hole)


class Export(Protocol):
    """A read-only image the server can serve.

    `read` is called from several threads at once and must be thread-safe;
    it returns exactly `length` bytes (holes read as zeroes) or raises
    OSError / StrongroomError, which the client sees as EIO. `extents`
    covers [offset, offset+length) with (offset, length, is_hole) in order;
    gaps and overhangs are tolerated (gaps count as data).
    """

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def description(self) -> str: ...

    def read(self, offset: int, length: int) -> bytes | bytearray | memoryview: ...

    def extents(self, offset: int, length: int) -> Iterable[Segment]: ...


def clip_extents(raw: Iterable[Segment], offset: int, length: int) -> list[Segment]:
    """Normalise an export's extents to exactly cover [offset, offset+length).

    Clips overhangs, fills gaps with data (data is always a safe answer),
    skips empty or backwards entries and merges neighbours of the same kind,
    so a sloppy export can never make the server send an invalid reply.
    """
    out: list[Segment] = []
    pos, end = offset, offset + length

    def add(start: int, size: int, hole: bool) -> None:
        if out and out[-1][2] == hole:
            prev = out[-1]
            out[-1] = (prev[0], prev[1] + size, hole)
        else:
            out.append((start, size, hole))

    for start, size, hole in raw:
        if pos >= end:
            break
        stop = min(start + size, end)
        if size <= 0 or stop <= pos:
            continue
        if start > pos:
            gap_end = min(start, end)
            add(pos, gap_end - pos, False)
            pos = gap_end
            if pos >= end:
                break
        add(pos, stop - pos, bool(hole))
        pos = stop
    if pos < end:
        add(pos, end - pos, False)
    return out


class MemoryExport:
    """An export over bytes in memory, with optional declared holes (read as zeroes).

    For tests, benchmarks and small images; reads are zero-copy slices.
    """

    def __init__(
        self,
        name: str,
        data: bytes | bytearray | memoryview,
        holes: Sequence[tuple[int, int]] = (),
        description: str = "",
    ) -> None:
        self.name = name
        self.description = description
        self._data = memoryview(data).cast("B")
        self.size = len(self._data)
        self._holes = sorted((o, n) for o, n in holes if n > 0)
        self._starts = [o for o, _ in self._holes]

    def read(self, offset: int, length: int) -> memoryview:
        return self._data[offset : offset + length]

    def extents(self, offset: int, length: int) -> list[Segment]:
        end = offset + length
        out: list[Segment] = []
        pos = offset
        i = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        for start, size in self._holes[i:]:
            if start >= end:
                break
            if start + size <= pos:
                continue
            if start > pos:
                out.append((pos, start - pos, False))
                pos = start
            stop = min(start + size, end)
            out.append((pos, stop - pos, True))
            pos = stop
        if pos < end:
            out.append((pos, end - pos, False))
        return out
