"""VMs of the cluster: finding their points, restoring their disks, their status."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from strongroom.config import VmSpec
from strongroom.errors import UsageError
from strongroom.model.point import RecoveryPoint
from strongroom.model.vm import VmManifest
from strongroom.pipeline.blockmaps import load_block_map, load_vm_manifest
from strongroom.pipeline.image_restore import ImageRestoreSummary
from strongroom.repository.leases import Lease, LeaseRecord
from strongroom.repository.repo import Repository
from strongroom.services.image_restore import restore_map
from strongroom.services.points import list_points
from strongroom.types import ProgressCallback, no_progress


def vm_path(name: str) -> str:
    """The `paths` entry of a VM's points: how its points are found cluster-wide."""
    return f"vm:{name}"


def vm_points(repo: Repository, name: str) -> list[RecoveryPoint]:
    """The VM's points, oldest first, whichever host took them."""
    return [
        p
        for p in list_points(repo, on_damaged=lambda *_: None)
        if p.kind == "vm" and p.paths == [vm_path(name)]
    ]


def vm_lease(repo: Repository, spec: VmSpec) -> Lease:
    key = repo.lease_id(vm_path(spec.name))
    return Lease(repo.leases(), key, f"VM {spec.name}", spec.lease_ttl)


def manifest_of(repo: Repository, point: RecoveryPoint) -> VmManifest:
    if point.kind != "vm":
        raise UsageError(f"point {point.short_id} is a {point.kind} point, not a VM point")
    return load_vm_manifest(repo, bytes.fromhex(point.tree))


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


@dataclass
class VmStatus:
    name: str
    points: int
    last: RecoveryPoint | None
    lease: LeaseRecord | None

    def as_dict(self) -> dict[str, Any]:
        last = self.last
        lease = self.lease
        holder = None
        if lease is not None and not lease.expired():
            holder = {"host": lease.host, "pid": lease.pid, "expires": lease.expires}
        return {
            "vm": self.name,
            "points": self.points,
            "last_point": None
            if last is None
            else {
                "id": last.id,
                "time": last.time.isoformat(),
                "host": last.host,
                "consistency": last.consistency,
                "tracker": last.summary.get("tracker", ""),
                "bytes_changed": last.summary.get("bytes_changed", 0),
                "bytes_read": last.summary.get("bytes_read", 0),
                "bytes_sent": last.summary.get("data_added_stored", 0),
                "disks": len(last.summary.get("disks", [])),
            },
            "lease_holder": holder,
        }


def vm_status(repo: Repository, specs: list[VmSpec]) -> list[VmStatus]:
    out = []
    for spec in specs:
        points = vm_points(repo, spec.name)
        record = repo.leases().current(repo.lease_id(vm_path(spec.name)))
        out.append(VmStatus(spec.name, len(points), points[-1] if points else None, record))
    return out
