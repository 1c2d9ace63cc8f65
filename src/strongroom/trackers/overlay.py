"""Overlay tracker: the allocation map of a qcow2 overlay on the parent's image.

After a backup of `base.qcow2`, a user (or a hypervisor's external snapshot)
puts an overlay on top of it and writes go there; `base.qcow2` stays as the
point saw it. The next backup reads the overlay, and the blocks allocated in
its top layer (`qemu:allocation-depth` = 1, zeroed clusters included) are
exactly the changes. That holds only if the backing file is unchanged since
the parent point read it: the point records the file's identity (path, size,
modification time to the nanosecond) after its backup, and the identities of
the files below it; the tracker cannot prove anything when either differs
(the base was written, replaced, or rebased) and the backup then compares.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from strongroom.model.lineage import BlockLineage
from strongroom.sources.qemu_img import file_identity
from strongroom.trackers.base import Span, Unproven, normalize

ALLOCATION_DEPTH = "qemu:allocation-depth"


class DepthView(Protocol):
    """A view of the overlay that may export its allocation depth (NBD)."""

    size: int

    def has_context(self, name: str) -> bool: ...

    def status(self, context: str) -> Iterator[tuple[int, int, int]]: ...


class OverlayTracker:
    """The overlay's own clusters, if its base is the image the parent read.

    `backing` is the overlay's backing file (None: it has none), `below` the
    identities of the files below the overlay, top first (`backing` first),
    as `sources.qemu_img.backing_chain_identity` gives them."""

    name = "overlay"
    note = ""

    def __init__(
        self,
        view: DepthView,
        image: str,
        backing: str | None,
        below: Sequence[str],
        parent: BlockLineage,
    ) -> None:
        self.view = view
        self.image = image
        self.backing = backing
        self.below = list(below)
        self.parent = parent

    def base_problem(self) -> str | None:
        """Why the overlay's base is not what the parent point read; None if it is."""
        if self.backing is None:
            return f"{self.image} has no backing file"
        identity = file_identity(self.backing)
        if (
            identity is None
            or identity != self.parent.image_identity
            or list(self.parent.backing_chain) != self.below[1:]
        ):
            return "the overlay's backing file is not the image the parent point read"
        return None

    def changed(self) -> list[Span] | Unproven:
        problem = self.base_problem()
        if problem is not None:
            return Unproven(problem)
        if not self.view.has_context(ALLOCATION_DEPTH):
            return Unproven("the image does not report allocation depth")
        top = [(o, n) for o, n, depth in self.view.status(ALLOCATION_DEPTH) if depth == 1]
        return normalize(top, self.view.size)
