"""Compare tracker: every block whose content differs from a recorded state.

The fallback every other tracker rests on, and the one that needs no help
from the block layer: read the whole disk and compare each block with what
the recorded state held. The backup pipeline performs this comparison fused
with its one read of the disk (a ChangeSet whose `blocks` is None: each
block read is compared with the parent's map entry, pipeline/image_backup.py),
so a block is never read twice; this stand-alone form is the same rule for
callers that keep their own state (`record`), and what the contract suite
holds the fallback to. It always proves its answer: it looked at everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from strongroom.sources.block import BlockSource
from strongroom.trackers.base import Span, Unproven, normalize


def _digest(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _ranges(size: int, block_size: int) -> list[tuple[int, int]]:
    return [(o, min(block_size, size - o)) for o in range(0, size, block_size)]


def record(source: BlockSource, block_size: int) -> list[bytes]:
    """The state to compare with later: one digest per block, in order."""
    return [_digest(data) for _, data in source.read_blocks(_ranges(source.size, block_size))]


class CompareTracker:
    """Blocks of `source` whose digest differs from `recorded` (from `record`);
    blocks beyond the recorded disk (it grew) count as changed."""

    name = "compare"
    note = ""

    def __init__(self, source: BlockSource, block_size: int, recorded: Sequence[bytes]) -> None:
        self.source = source
        self.block_size = block_size
        self.recorded = recorded

    def changed(self) -> list[Span] | Unproven:
        found: list[tuple[int, int]] = []
        for offset, data in self.source.read_blocks(_ranges(self.source.size, self.block_size)):
            block = offset // self.block_size
            if block >= len(self.recorded) or self.recorded[block] != _digest(data):
                found.append((offset, len(data)))
        return normalize(found, self.source.size)
