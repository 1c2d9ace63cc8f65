"""The set of blocks a tracker says may have changed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]


def blocks_touched(extents: Iterable[tuple[int, int]], block_size: int, blocks: int) -> Mask:
    """Mark every block that an (offset, length) extent touches (rounded out)."""
    mask = np.zeros(blocks, dtype=np.bool_)
    for offset, length in extents:
        if length <= 0:
            continue
        first = offset // block_size
        last = (offset + length - 1) // block_size
        mask[max(first, 0) : min(last + 1, blocks)] = True
    return mask


@dataclass
class ChangeSet:
    """What a tracker found: `blocks` to read, or None meaning every block.

    `tracker` names the method for the point's record and the user's output
    ("bitmap", "overlay", "compare", "full"); `note` says why a better one
    was not used, when that happened.
    """

    tracker: str
    blocks: Mask | None = None
    note: str = ""
