"""VMs of the cluster: finding their points, their lease, their status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strongroom.config import VmSpec
from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.vm import VmManifest
from strongroom.pipeline.blockmaps import load_vm_manifest
from strongroom.repository.leases import Lease, LeaseRecord
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.points import list_points


def vm_path(name: str) -> str:
    """The `paths` entry of a VM's points: how its points are found cluster-wide."""
    return f"vm:{name}"


def vm_points(repo: Repository, name: str) -> list[RecoveryPoint]:
    """The VM's points, oldest first, whichever host took them."""
    return [
        p
        for p in list_points(repo, on_damaged=lambda *_: None)
        if p.kind == PointKind.VM and p.paths == [vm_path(name)]
    ]


def vm_lease(repo: Repository, spec: VmSpec) -> Lease:
    key = repo.lease_id(vm_path(spec.name))
    return Lease(repo.leases(), key, f"VM {spec.name}", spec.lease_ttl)


def manifest_of(repo: ChunkStore, point: RecoveryPoint) -> VmManifest:
    if point.kind != PointKind.VM:
        raise UsageError(f"point {point.short_id} is a {point.kind} point, not a VM point")
    return load_vm_manifest(repo, bytes.fromhex(point.tree))


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
