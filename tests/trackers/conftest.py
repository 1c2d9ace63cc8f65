"""Disks for the tracker contract suite: qcow2 files with bitmaps, overlays,
a running qemu-storage-daemon, raw files (tools from tests/images)."""

from __future__ import annotations

from tests.helpers.images import QEMU, needs, qemu_io, run

__all__ = ["QEMU", "needs", "qemu_io", "run"]
