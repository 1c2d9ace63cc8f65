"""What a recovery point holds: its kind, which decides how its `tree` is read.

The values are the strings format 1 stores in a point's `kind` field
(docs/format.md §11), so a `StrEnum` member encodes to exactly the JSON older
strongroom wrote and compares equal to the plain string.
"""

from __future__ import annotations

from enum import StrEnum


class PointKind(StrEnum):
    FILES = "files"  # `tree` is a file tree (§10)
    BLOCK = "block"  # `tree` is a block map root (§10a)
    VM = "vm"  # `tree` is a VM manifest (§10b)

    @classmethod
    def parse(cls, value: str) -> PointKind | str:
        """The member for a stored kind; a kind this version does not know stays
        the plain string, so the point is still listed but never read as one of
        ours (a reader must not take it for a file tree)."""
        try:
            return cls(value)
        except ValueError:
            return value


IMAGE_KINDS = frozenset({PointKind.BLOCK, PointKind.VM})  # points made of block maps
