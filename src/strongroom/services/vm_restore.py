"""Restoring a VM point's disks: into files, or one disk back into a block layer."""

from __future__ import annotations

import os
import threading

from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.pipeline.image_restore import ImageRestoreSummary
from strongroom.repository.repo import Repository
from strongroom.services.image_restore import restore_map
from strongroom.services.vms import manifest_of
from strongroom.types import ProgressCallback, no_progress


def restore_vm(
    repo: Repository,
    point: RecoveryPoint,
    target: str,
    fmt: str = "raw",
    disks: list[str] | None = None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> list[tuple[str, str, ImageRestoreSummary]]:
    """Restore the point's disks: into the folder `target` as DISK.raw / DISK.qcow2,
    or, for one disk (`disks=[NAME]`), into `target` itself (a file, a block
    device, or an NBD URI: back into a block layer). Returns (disk, where, summary)."""
    manifest = manifest_of(repo, point)
    chosen = [manifest.disk(name) for name in disks] if disks else manifest.disks
    single = disks is not None and len(chosen) == 1 and not os.path.isdir(target)
    if not single:
        os.makedirs(target, exist_ok=True)
    done = []
    for disk in chosen:
        where = target if single else os.path.join(target, f"{disk.name}.{fmt}")
        block_map = load_block_map(repo, bytes.fromhex(disk.map_root))
        summary = restore_map(repo, block_map, where, fmt, progress, cancel)
        done.append((disk.name, where, summary))
    return done
