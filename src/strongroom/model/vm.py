"""The manifest of a VM recovery point: its disks, all frozen at one instant.

A `vm` point's `tree` names this manifest (a TREE chunk, msgpack); each disk
entry names that disk's block map root, so everything block points can do
(restore, serve, export, files inside) works per disk. Format: docs/format.md §10b.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

VM_MANIFEST_VERSION = 1


@dataclass
class VmDisk:
    name: str  # the block node name
    size: int
    block_size: int
    map_root: str  # hex id of the disk's block map root
    summary: dict[str, Any] = field(default_factory=dict)  # what its backup did


@dataclass
class VmManifest:
    vm: str
    disks: list[VmDisk]

    def encode(self) -> bytes:
        doc = {
            "version": VM_MANIFEST_VERSION,
            "vm": self.vm,
            "disks": [
                {
                    "name": d.name,
                    "size": d.size,
                    "block_size": d.block_size,
                    "map": bytes.fromhex(d.map_root),
                    "summary": d.summary,
                }
                for d in self.disks
            ],
        }
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
        return packed

    @classmethod
    def decode(cls, data: bytes) -> VmManifest:
        try:
            doc = msgpack.unpackb(data, raw=False)
            if doc.get("version") != VM_MANIFEST_VERSION:
                raise ValueError(f"unknown VM manifest version {doc.get('version')}")
            disks = [
                VmDisk(
                    name=str(d["name"]),
                    size=int(d["size"]),
                    block_size=int(d["block_size"]),
                    map_root=bytes(d["map"]).hex(),
                    summary=dict(d.get("summary") or {}),
                )
                for d in doc["disks"]
            ]
            return cls(vm=str(doc["vm"]), disks=disks)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"malformed VM manifest: {err}") from None

    def disk(self, name: str) -> VmDisk:
        for d in self.disks:
            if d.name == name:
                return d
        names = ", ".join(d.name for d in self.disks)
        raise KeyError(f"the point has no disk {name!r} (disks: {names})")
