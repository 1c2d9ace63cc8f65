"""Dirty-bitmap lineage: which bitmaps to start, stop, read and retire.

Every backup that controls the block layer (QMP, or qemu-img on an image file
nobody has open) starts a new persistent bitmap `PREFIX.TOKEN` at its instant
and records its name in the point. The next backup reads the bitmap its parent
started, plus any other bitmap of the same prefix (leftovers of attempts that
failed after starting theirs: each of them began after the parent's bitmap was
stopped, so together they hold every write since the parent). A bitmap named
exactly PREFIX that the user created is stopped and retired like the others;
it is never read as a change record, since nothing proves it is older than
the parent point.

The parent's bitmap missing (block layer restarted, image replaced or
restored) or any of them inconsistent (unclean shutdown) means the record is
incomplete: the backup compares every block instead, and says why.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from strongroom.sources.qemu_img import BitmapInfo
from strongroom.trackers.base import Span, Unproven, normalize


def is_ours(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def new_bitmap_name(prefix: str) -> str:
    return f"{prefix}.{secrets.token_hex(6)}"


@dataclass
class BitmapPlan:
    add: str  # started at this point's instant; the next backup reads it
    disable: list[str] = field(default_factory=list)  # ours still recording
    read: list[str] | None = None  # union = every change since the parent; None: compare
    # Removed once the blocks are stored: before the point (image backup) or
    # after it (VM backup); both orders are safe (docs/design.md, bitmap).
    retire: list[str] = field(default_factory=list)
    note: str = ""


def plan_bitmaps(
    existing: Sequence[BitmapInfo], prefix: str, parent_bitmap: str | None
) -> BitmapPlan:
    ours = [b for b in existing if is_ours(b.name, prefix)]
    plan = BitmapPlan(
        add=new_bitmap_name(prefix),
        disable=[b.name for b in ours if b.recording and not b.inconsistent],
        retire=[b.name for b in ours],
    )
    names = {b.name for b in ours}
    broken = [b.name for b in ours if b.inconsistent]
    if broken:
        plan.note = f"dirty bitmap {broken[0]} is inconsistent (unclean shutdown)"
    elif parent_bitmap is None:
        # Nothing proves that a bitmap found now is older than the parent point
        # (a user's bitmap may have started after it): compare once, and start
        # the lineage at this point.
        plan.note = "the parent point started no dirty bitmap of this lineage"
    elif parent_bitmap not in names:
        plan.note = (
            f"dirty bitmap {parent_bitmap} is gone (block layer restarted or image replaced)"
        )
    else:
        plan.read = sorted(names)
    return plan


class DirtyView(Protocol):
    """A view of the disk that exports dirty bitmaps (an NBD source)."""

    size: int

    def dirty_extents(self, bitmaps: Iterable[str]) -> list[tuple[int, int]] | None: ...


class BitmapTracker:
    """The union of dirty bitmaps: every write since the oldest of them started.

    `read` is the plan's list (None: the lineage is broken, `reason` says how);
    `missing` is what is said when the view does not export one of them."""

    name = "bitmap"

    def __init__(
        self,
        view: DirtyView,
        read: Sequence[str] | None,
        reason: str = "",
        *,
        note: str = "",
        missing: str = "the block layer did not export the dirty bitmaps",
    ) -> None:
        self.view = view
        self.read = None if read is None else list(read)
        self.reason = reason or "no dirty bitmap reaches back to the parent point"
        self.note = note
        self.missing = missing

    @classmethod
    def from_plan(cls, view: DirtyView, plan: BitmapPlan) -> BitmapTracker:
        return cls(view, plan.read, plan.note)

    def changed(self) -> list[Span] | Unproven:
        if self.read is None:
            return Unproven(self.reason)
        extents = self.view.dirty_extents(self.read)
        if extents is None:
            return Unproven(self.missing)
        return normalize(extents, self.view.size)
