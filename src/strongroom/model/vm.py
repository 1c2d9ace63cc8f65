"""The manifest of a VM recovery point: its disks, all frozen at one instant.

A `vm` point's `tree` names this manifest (a TREE chunk, msgpack); each disk
entry names that disk's block map root, so everything block points can do
(restore, serve, export, files inside) works per disk. Format: docs/format.md §10b.

Disk names become file names (`restore --vm --target DIR` writes DIR/NAME.raw),
so decoding holds them to the rules of every name in a manifest
(`model.names`): one path component, no control characters, unique. The
disks keep the order the VM's configuration gave them (format 1 wrote them so,
and restore reports them so); uniqueness is checked on a sorted copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from strongroom.errors import PathNotFound
from strongroom.model.lineage import BlockLineage, read_lineage
from strongroom.model.names import names_problem, printable

VM_MANIFEST_VERSION = 1


@dataclass
class VmDisk:
    name: str  # the block node name
    size: int
    block_size: int
    map_root: str  # hex id of the disk's block map root
    summary: dict[str, Any] = field(default_factory=dict)  # what its backup did
    lineage: BlockLineage | None = None  # what the next backup starts from (§10a)

    def block_lineage(self) -> BlockLineage:
        """The disk's lineage (disks of older points: from their summary)."""
        return read_lineage(self.lineage, self.summary)


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
                    # absent when unset: manifests without it keep format 1's bytes
                    **({"lineage": d.lineage.to_doc()} if d.lineage is not None else {}),
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
            disks = []
            for d in doc["disks"]:
                if type(d["name"]) is not str or type(d["map"]) is not bytes or len(d["map"]) != 32:
                    raise ValueError("a disk has a malformed name or map id")
                disks.append(
                    VmDisk(
                        name=d["name"],
                        size=int(d["size"]),
                        block_size=int(d["block_size"]),
                        map_root=d["map"].hex(),
                        summary=dict(d.get("summary") or {}),
                        lineage=BlockLineage.from_doc(d["lineage"]) if "lineage" in d else None,
                    )
                )
            for d in disks:
                if printable(d.name) != d.name:
                    raise ValueError(f"a disk name holds control characters ({printable(d.name)})")
            problem = names_problem(sorted(d.name for d in disks))
            if problem is not None:
                raise ValueError(f"disk list holds {problem}")
            return cls(vm=str(doc["vm"]), disks=disks)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
            raise ValueError(f"malformed VM manifest: {err}") from None

    def disk(self, name: str) -> VmDisk:
        for d in self.disks:
            if d.name == name:
                return d
        names = ", ".join(d.name for d in self.disks)
        raise PathNotFound(f"the point has no disk {name!r} (disks: {names})")
