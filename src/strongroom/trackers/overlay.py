"""Overlay tracker: the allocation map of a qcow2 overlay on the parent's image.

After a backup of `base.qcow2`, a user (or a hypervisor's external snapshot)
puts an overlay on top of it and writes go there; `base.qcow2` stays as the
point saw it. The next backup reads the overlay, and the blocks allocated in
its top layer (`qemu:allocation-depth` = 1, zeroed clusters included) are
exactly the changes. That holds only if the backing file is unchanged since
the parent point read it: the point records the file's identity (path, size,
modification time to the nanosecond) after its backup, and the tracker falls
back to the comparison when the backing file's identity differs.
"""

from __future__ import annotations

import os

from strongroom.sources.block import NbdSource
from strongroom.trackers.changes import ChangeSet, blocks_touched

ALLOCATION_DEPTH = "qemu:allocation-depth"


def overlay_identity(path: str) -> str:
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def overlay_changes(view: NbdSource, block_size: int) -> ChangeSet:
    if not view.has_context(ALLOCATION_DEPTH):
        return ChangeSet("compare", None, "the image does not report allocation depth")
    top = [(o, n) for o, n, depth in view.status(ALLOCATION_DEPTH) if depth == 1]
    blocks = -(-view.size // block_size)
    return ChangeSet("overlay", blocks_touched(top, block_size, blocks))
