"""`--dry-run` of image and VM backups through a backup server, as the agent
(docs/server.md, "Agents"; the files dry run: services/agent_backup.py).

What a real run would read is read and cut, the server is asked which of the
chunks it lacks (the uploads' own question, `RemoteStore.lacking`), nothing is
sent and no point is made: "added" is what a real run would upload (block
maps aside). The parent is the one a real run would take, its chunks counted
as stored as a real run counts them.

A dry run changes nothing on the source either, so it reads with the
comparison tracker: `--changed-since auto` compares every allocated block
with the parent point (a real run may take a dirty bitmap instead and read
less, but uploads the same blocks: those whose content is new); `bitmap` and
`overlay` are refused, as is a live disk behind `--qmp` (its view starts a
bitmap on the block layer).

A VM's dry run (`backup --vm NAME --dry-run`) takes the cluster's lease as a
real run does (its views are named there, so a next holder removes them
should it die), freezes the disks together in one transaction that starts
and stops no bitmap, without the guest freeze (the view is crash-consistent:
enough to count blocks), compares each disk with the parent point's map,
and tears its views down: the guest and the bitmap lineage are untouched.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from typing import Any

from strongroom.config import VmSpec, data_home
from strongroom.errors import UsageError
from strongroom.pipeline.image_backup import ImageBackup
from strongroom.remote.store import RemoteStore
from strongroom.services.agent_images import image_parent
from strongroom.services.agent_vms import RemoteLease, adopt_vm, cluster_vm_points, machine_cluster
from strongroom.services.image_backup import (
    ImageBackupRequest,
    ImageDryRun,
    dry_run_image,
)
from strongroom.services.impact import limit_reads, read_bucket
from strongroom.services.vm_backup import (
    VmTarget,
    disk_parent_map,
    reap_inherited_views,
    vm_parent,
)
from strongroom.sources.live import LiveDisk, ViewPlan, freeze_together
from strongroom.sources.qmp import QmpClient
from strongroom.trackers.choose import TrackerMode, fallback, parse_mode
from strongroom.types import ProgressCallback, no_progress


def comparing_tracker(changed_since: str) -> str:
    """The tracker a dry run reads with (see the module); UsageError for one
    that would change the source."""
    mode, _name = parse_mode(changed_since)
    if mode in (TrackerMode.BITMAP, TrackerMode.OVERLAY):
        raise UsageError(
            "--dry-run reads with --changed-since auto, compare or none "
            "(a bitmap or an overlay would change the source)"
        )
    return "compare" if mode == TrackerMode.AUTO else changed_since


def dry_run_image_through_server(
    store: RemoteStore,
    machine: str,
    req: ImageBackupRequest,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageDryRun:
    """`backup --image SOURCE --dry-run --server`: what a block point of
    `machine` would upload (see the module)."""
    if req.qmp:
        raise UsageError(
            "--dry-run reads image files and NBD exports, not a disk behind --qmp "
            "(its view would start a dirty bitmap)"
        )
    req.changed_since = comparing_tracker(req.changed_since)
    req.no_seeds = True  # a seed's blocks are stored: `lacking` leaves them out anyway
    identity, parent, parent_map = image_parent(store, machine, req)
    found = dry_run_image(store, req, identity, parent, parent_map, progress, cancel)
    lacking = store.lacking(list(found.unknown))
    found.summary.blocks_new = len(lacking)
    found.summary.data_added = sum(found.unknown[c] for c in lacking)
    return found


@dataclass
class VmDryRun:
    """What a VM's dry run found: each disk's summary as a real run's
    (`disk` named), the parent point, and what the server lacks."""

    host: str  # the cluster
    parent: str | None
    disks: list[dict[str, Any]]
    seconds: float
    blocks_new: int = 0
    data_added: int = 0
    warnings: list[str] = field(default_factory=list)


def dry_run_vm_through_server(
    store: RemoteStore,
    spec: VmSpec,
    *,
    block_size: int,
    changed_since: str = "auto",
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    limit_read: int | None = None,
) -> VmDryRun:
    """`backup --vm NAME --dry-run --server` (see the module); `block_size`:
    the repository's, for a first point."""
    mode = parse_mode(comparing_tracker(changed_since))[0]
    cluster = machine_cluster(store)
    target = VmTarget(
        store=store,
        host=cluster,
        block_size=block_size,
        points=lambda: cluster_vm_points(store, cluster, spec.name),
        lease=lambda: RemoteLease(store.client, spec.name, spec.lease_ttl).acquire(),
        adopt=lambda manifest: adopt_vm(store, manifest),
    )
    reads = read_bucket(limit_read)
    warnings: list[str] = []
    unknown: dict[bytes, int] = {}
    summaries: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with target.lease() as lease, ExitStack() as stack:
        parent, parent_disks, parent_maps = vm_parent(target, warnings)
        qmp = stack.enter_context(QmpClient(spec.qmp))
        scratch = spec.scratch or str(data_home() / "strongroom" / "scratch")
        os.makedirs(scratch, exist_ok=True)
        disks: list[tuple[LiveDisk, Any, int]] = []
        for node in spec.disks:
            live = LiveDisk(qmp, node, spec.nbd, scratch)
            stack.callback(live.close_view)  # also undoes a view half opened
            found = disk_parent_map(store, live, parent_disks.get(node), parent_maps, warnings)
            parent_map = found if mode != TrackerMode.NONE else None
            disks.append((live, parent_map, found.block_size if found else block_size))
        warnings += reap_inherited_views(lease, [live for live, _, _ in disks])
        lease.annotate(views=[live.reserve_token() for live, _, _ in disks])
        for live, _, _ in disks:
            live.prepare_view()
        lease.verify()
        freeze_together(qmp, [(live, ViewPlan(None, size)) for live, _, size in disks])
        for live, parent_map, size in disks:
            view = stack.enter_context(closing(live.export_view([])))
            changes = fallback(mode, parent_map is not None)
            pipeline = ImageBackup(store, limit_reads(view, reads), size, parent_map, changes,
                                   progress, cancel, dry_run=True)  # fmt: skip
            pipeline.run()
            for cid, length in pipeline.dry_new.items():
                unknown.setdefault(cid, length)
            summaries.append({"disk": live.node, **pipeline.summary.as_dict()})
            warnings += pipeline.summary.warnings
            view.close()
            live.close_view()
    lacking = store.lacking(list(unknown))
    parent_id = parent.id if parent is not None else None
    done = VmDryRun(cluster, parent_id, summaries, time.monotonic() - t0, warnings=warnings)
    done.blocks_new = len(lacking)
    done.data_added = sum(unknown[c] for c in lacking)
    return done
