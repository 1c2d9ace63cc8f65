"""An agent's VM points through its backup server (docs/server.md, "VMs
through the server"; docs/design.md §9i).

A VM lives on a cluster whose nodes share its disks; the administrator puts
those nodes' machines in one cluster. Any node may then take the VM's next
point: the steps of a local `backup --vm` (services/vm_backup.py) run over a
`VmTarget` whose
- store is the `RemoteStore` (chunks cut and named as locally; only what the
  server lacks is sent);
- lease is the server's (`RemoteLease`: taken, renewed on a thread, verified
  before the commit and handed back through `/agent/vms/NAME/lease`), so two
  nodes never both back the VM up, and a dead node's lease expires;
- points are the cluster's VM points of that VM, whichever node took them
  (the server lists them to every node of the cluster), so the parent may be
  another node's point: its manifest and maps are read through the server
  and their chunks counted as stored (the server checked them at its
  commit), so only changed blocks are sent;
- host is the cluster's name (the server refuses another).
Dirty bitmaps are named after the repository id as locally, so a node that
backs the VM up after a local backup (or after another node) continues the
same bitmap lineage on the shared block layer.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any
from urllib.parse import quote

import numpy as np

from strongroom.config import VmSpec
from strongroom.errors import RemoteError, UsageError
from strongroom.model.blockmap import BlockMap, decode_root
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.vm import VmManifest
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.pipeline.image_restore import ImageRestoreSummary
from strongroom.remote.client import Client
from strongroom.remote.store import RemoteStore
from strongroom.repository.format import BlobType
from strongroom.repository.leases import LeaseBusy, LeaseLost, LeaseRecord
from strongroom.services.agent_backup import agent_points
from strongroom.services.image_restore import restore_map
from strongroom.services.vm_backup import VmBackupResult, VmQuiesce, VmTarget, backup_vm_to
from strongroom.services.vms import manifest_of, vm_path
from strongroom.types import ProgressCallback, no_progress

__all__ = ["RemoteLease", "backup_vm_through_server", "restore_vm_through_server"]


def _status(err: RemoteError, code: int) -> bool:
    """Whether the server refused with `code` (the client's one-line message
    is `server URL: CODE error`)."""
    return f": {code} " in str(err)


class RemoteLease:
    """The server's lease on a VM of this machine's cluster, held for one
    backup: renewed every quarter TTL on a thread; `verify` asks the server."""

    def __init__(self, client: Client, vm: str, ttl: float) -> None:
        self.client = client
        self.vm = vm
        self.ttl = ttl
        self.path = f"/api/v1/agent/vms/{quote(vm, safe='')}/lease"
        self.holder = ""
        self.inherited: LeaseRecord | None = None
        self.lost = ""
        self._deadline = 0.0  # monotonic: the lease certainly held until then
        self._notes: dict[str, Any] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RemoteLease:
        """Take the lease or raise LeaseBusy naming its holder."""
        asked = time.monotonic()
        try:
            # not retried once sent: a lost answer would leave our own lease busy
            doc = self.client.post_json(self.path, {"ttl": self.ttl}, idempotent=False)
        except RemoteError as err:
            if _status(err, 409):
                raise LeaseBusy(str(err).split(": 409 ", 1)[-1]) from None
            raise
        self.holder = str(doc["holder"])
        self._deadline = asked + self.ttl
        previous = doc.get("inherited")
        if isinstance(previous, dict) and isinstance(previous.get("notes"), dict):
            self.inherited = LeaseRecord(
                generation=0,
                holder="",
                host=str(previous.get("host", "?")),
                pid=0,
                expires=0.0,
                taken=float(previous.get("taken", 0.0)),
                what=f"VM {self.vm}",
                data=dict(previous["notes"]),
            )
        self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="vm-lease")
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except LeaseLost:
                return
            except RemoteError:
                continue  # verify() tells the backup once it matters

    def renew(self, notes: dict[str, Any] | None = None) -> None:
        with self._mutex:
            if self.lost:
                raise LeaseLost(self.lost)
            asked = time.monotonic()
            body: dict[str, Any] = {"holder": self.holder, "ttl": self.ttl}
            if notes is not None:
                body["notes"] = notes
            try:
                self.client.post_json(self.path + "/renew", body)
            except RemoteError as err:
                if _status(err, 409):
                    self.lost = f"the lease of VM {self.vm} passed to another node"
                    raise LeaseLost(self.lost) from None
                raise
            self._deadline = asked + self.ttl

    def annotate(self, **notes: object) -> None:
        """Record notes in the lease at once (what a crash would leave behind)."""
        self._notes.update(notes)
        self.renew(dict(self._notes))

    def verify(self) -> None:
        """LeaseLost unless the lease is certainly still ours for a while."""
        with self._mutex:
            if self.lost:
                raise LeaseLost(self.lost)
            if time.monotonic() > self._deadline - self.ttl / 8:
                raise LeaseLost(f"the lease of VM {self.vm} could not be renewed in time")
        try:
            self.client.post_json(self.path + "/verify", {"holder": self.holder})
        except RemoteError as err:
            if _status(err, 409):
                raise LeaseLost(f"the lease of VM {self.vm} passed to another node") from None
            raise

    def release(self) -> None:
        """Hand the lease back (best effort: otherwise it expires)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.holder or self.lost:
            return
        self.lost = "released"
        try:
            self.client.post_json(self.path + "/release", {"holder": self.holder})
        except RemoteError:
            pass

    def __enter__(self) -> RemoteLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def machine_cluster(store: RemoteStore) -> str:
    """This machine's cluster, as the server says; UsageError when none."""
    me = store.client.get_json("/api/v1/agent/me")
    cluster = me.get("cluster") if isinstance(me, dict) else None
    if not isinstance(cluster, str) or not cluster:
        raise UsageError(
            "this machine is in no cluster: an administrator puts it in one "
            "(PUT /api/v1/machines/NAME/cluster) before it backs VMs up through the server"
        )
    return cluster


def cluster_vm_points(store: RemoteStore, cluster: str, vm: str) -> list[RecoveryPoint]:
    """The VM's points of the cluster, oldest first, whichever node took them."""
    return [
        p
        for p in agent_points(store)
        if p.kind == PointKind.VM and p.host == cluster and p.paths == [vm_path(vm)]
    ]


def adopt_vm(store: RemoteStore, manifest: VmManifest) -> dict[str, BlockMap]:
    """The parent's maps and data chunks, known stored (the server checked
    them at its commit): an incremental sends only what is new. Returns the
    maps loaded (by root id, hex), so they are read once."""
    maps = {}
    for disk in manifest.disks:
        root_id = bytes.fromhex(disk.map_root)
        root = decode_root(store.load_chunk(root_id, BlobType.TREE))
        store.assume_stored([root_id, *(s for s in root.segments if s is not None)])
        maps[disk.map_root] = block_map = load_block_map(store, root_id)
        store.assume_stored(_data_ids(block_map))
    return maps


def _data_ids(block_map: BlockMap) -> list[bytes]:
    rows = block_map.ids[~block_map.hole_mask()]
    return [r.tobytes() for r in np.unique(rows, axis=0)] if len(rows) else []


def backup_vm_through_server(
    store: RemoteStore,
    spec: VmSpec,
    *,
    block_size: int,
    changed_since: str = "auto",
    tags: list[str] | None = None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    protect_name: str | None = None,
    quiesce: VmQuiesce | None = None,
    limit_read: int | None = None,
) -> VmBackupResult:
    """One point of the VM `spec`, of this machine's cluster, through the
    server (the module's contract); `block_size`: the repository's, for a
    first point; `protect_name`, `quiesce`: a protected source's cycle, as
    `backup_vm` takes them."""
    cluster = machine_cluster(store)
    target = VmTarget(
        store=store,
        host=cluster,
        block_size=block_size,
        points=lambda: cluster_vm_points(store, cluster, spec.name),
        lease=lambda: RemoteLease(store.client, spec.name, spec.lease_ttl).acquire(),
        adopt=lambda manifest: adopt_vm(store, manifest),
    )
    return backup_vm_to(
        target,
        spec,
        changed_since=changed_since,
        tags=tags,
        progress=progress,
        cancel=cancel,
        protect_name=protect_name,
        quiesce=quiesce,
        limit_read=limit_read,
    )


def restore_vm_through_server(
    store: RemoteStore,
    point: RecoveryPoint,
    target: str,
    fmt: str = "raw",
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> list[tuple[str, str, ImageRestoreSummary]]:
    """Every disk of a VM point the machine may read (its cluster's) into the
    folder `target` as DISK.raw (or .qcow2), blocks fetched ahead in address
    order. Returns (disk, where, summary)."""
    manifest = manifest_of(store, point)
    os.makedirs(target, exist_ok=True)
    done = []
    for disk in manifest.disks:
        block_map = load_block_map(store, bytes.fromhex(disk.map_root))
        data = np.flatnonzero(~block_map.hole_mask()).tolist()
        store.plan_reads((block_map.ids[b].tobytes(), block_map.extent(b)[1]) for b in data)
        where = os.path.join(target, f"{disk.name}.{fmt}")
        done.append((disk.name, where, restore_map(store, block_map, where, fmt, progress, cancel)))
    return done
