"""The interface every change tracker implements.

A tracker is bound, when built, to a source and to the state it tracks from
(the parent point's dirty bitmap, the image an overlay was put on, the
parent's block contents). `changed()` then answers one question: which byte
ranges may differ from that state? Either a list of extents that holds every
byte written since (more is allowed, never less), or `Unproven` with the
reason it cannot tell (the bitmap is gone, the base was written, the block
layer did not export what was asked). A tracker never guesses: "cannot
prove" is the answer whenever the record may have a gap, and the backup then
compares every block (`trackers/choose.py`).

Extents come back sorted, non-overlapping and within the disk (`normalize`),
whatever order the underlying record gives them in (several bitmaps overlap).
The contract suite in `trackers/testing.py` holds every tracker to this.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Span(NamedTuple):
    """A byte range a tracker reports: `length` bytes from `offset`."""

    offset: int
    length: int


@dataclass(frozen=True)
class Unproven:
    """The tracker cannot prove it saw every change; `reason` says why (one
    line, shown to the user as the point's tracker note)."""

    reason: str


class ChangeTracker(Protocol):
    """How one source's changes since a recorded state are found."""

    @property
    def name(self) -> str:
        """What the point records as its `tracker` ("bitmap", "overlay", ...)."""
        ...

    @property
    def note(self) -> str:
        """Said to the user even when the changes are proven ("" mostly)."""
        ...

    def changed(self) -> Sequence[Span] | Unproven:
        """Every byte range that may differ from the recorded state, sorted and
        non-overlapping within the disk; or why that cannot be proven."""
        ...


def normalize(extents: Iterable[tuple[int, int]], size: int) -> list[Span]:
    """Sorted, merged (overlapping or touching ranges become one) and clipped
    to [0, size); empty ranges are dropped."""
    out: list[Span] = []
    for offset, length in sorted((max(o, 0), o + n) for o, n in extents if n > 0):
        end = min(length, size)
        if end <= offset:
            continue
        if out and offset <= out[-1].offset + out[-1].length:
            last = out[-1]
            out[-1] = Span(last.offset, max(last.offset + last.length, end) - last.offset)
        else:
            out.append(Span(offset, end - offset))
    return out
