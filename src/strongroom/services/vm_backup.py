"""Back up a VM of the cluster: all its disks at one instant, under a lease.

Steps, from any host of the cluster:
1. take the VM's lease in the repository (`repository/leases.py`): a second
   host gets "busy", a dead holder's lease expires;
2. prepare a fleece node per disk on the VM's block layer (QMP);
3. quiesce the guest if configured (guest agent or commands, bounded), or,
   for the protection service, run its quiesce engine around the next step
   (`quiesce=`: the policy's pre hooks, the guest freeze under the engine's
   watchdog, ... thaw, post hooks; protect/quiesce.py);
4. one QMP `transaction`: for every disk, the dirty bitmap rotates and a
   copy-before-write job starts, so all disks freeze between the same two
   guest writes; thaw at once;
5. read each frozen view over NBD while writers go on: the first backup (or
   a lost bitmap) reads everything, later ones the blocks of the bitmap that
   ended at the instant;
6. store every disk's map, one manifest, one `vm` point; then retire the
   bitmaps the point superseded and tear the views down.
Nothing is committed if the lease was lost meanwhile.

The steps run over a `VmTarget`: the repository (`local_target`: its lease,
its points, this host) or the backup server (services/agent_vms.py: the
server's lease for the cluster, the cluster's points, the cluster as host).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, closing
from dataclasses import dataclass, field
from typing import Any, Protocol

from strongroom.config import VmSpec, data_home
from strongroom.errors import StrongroomError
from strongroom.model.blockmap import BlockMap
from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage
from strongroom.model.point import RecoveryPoint, at_instant, now
from strongroom.model.vm import VmDisk, VmManifest
from strongroom.pipeline.blockmaps import load_block_map, load_vm_manifest, save_vm_manifest
from strongroom.pipeline.image_backup import ImageBackup
from strongroom.protect.freeze import GuestFreeze
from strongroom.protect.quiesce import Quiescing
from strongroom.protect.source_points import PROTECT_TAG, protect_summary
from strongroom.repository.leases import LeaseRecord
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.impact import limit_reads, read_bucket
from strongroom.services.recording import record_point
from strongroom.services.vms import vm_lease, vm_path, vm_points
from strongroom.sources.guest import Quiesce
from strongroom.sources.live import LiveDisk, ViewPlan, freeze_together
from strongroom.sources.qmp import QmpClient
from strongroom.trackers.bitmaps import BitmapPlan, BitmapTracker, is_ours, plan_bitmaps
from strongroom.trackers.choose import TrackerMode, choose_changes, parse_mode
from strongroom.types import ProgressCallback, no_progress

# The protection service's quiesce engine for one VM: called with what
# freezes the guest (its `[vm.NAME]` agent or commands; a target that
# answers "not configured" when neither is), entered around the freezing
# transaction (pre hooks, guest freeze, ... guest thaw, post hooks), with
# the guest frozen at most the engine's timeout whatever hangs.
VmQuiesce = Callable[[GuestFreeze], AbstractContextManager[Quiescing]]


@dataclass
class VmBackupResult:
    point: RecoveryPoint
    disks: list[dict[str, Any]]
    consistency: str
    quiesce_note: str
    seconds: float
    warnings: list[str] = field(default_factory=list)
    reason: str = ""  # why the point is only crash-consistent ("" when it is not)
    traffic: dict[str, int] | None = None  # through a server: what went over the wire


@dataclass
class _Disk:
    live: LiveDisk
    plan: BitmapPlan
    parent_map: BlockMap | None
    parent_bitmap: str | None
    block_size: int


class VmLeaseHandle(Protocol):
    """A held VM lease: the repository's (`Lease`) or the server's
    (services/agent_vms.py `RemoteLease`)."""

    @property
    def inherited(self) -> LeaseRecord | None: ...

    def annotate(self, **notes: object) -> None: ...

    def verify(self) -> None: ...


@dataclass
class VmTarget:
    """Where a VM's points go: a chunk store, the host the point names, the
    VM's earlier points (its parent's source), its lease, and what to do
    with the parent's manifest before reading (an agent counts its chunks
    as stored). `local_target` for a repository; agent_vms.py for a server."""

    store: ChunkStore
    host: str
    block_size: int  # a first backup's
    points: Callable[[], list[RecoveryPoint]]  # the VM's, oldest first
    lease: Callable[[], AbstractContextManager[VmLeaseHandle]]
    # the parent's disk maps it loaded, by root id (hex): not loaded again
    adopt: Callable[[VmManifest], dict[str, BlockMap]] = lambda _manifest: {}


def local_target(repo: Repository, spec: VmSpec) -> VmTarget:
    """The repository itself, under its own lease, as this host."""
    return VmTarget(
        store=repo,
        host=socket.gethostname(),
        block_size=repo.config.block_size,
        points=lambda: vm_points(repo, spec.name),
        lease=lambda: vm_lease(repo, spec).acquire(),
    )


def backup_vm(
    repo: Repository,
    spec: VmSpec,
    *,
    changed_since: str = "auto",
    tags: list[str] | None = None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    on_frozen: Any = None,
    protect_name: str | None = None,
    quiesce: VmQuiesce | None = None,
    limit_read: int | None = None,
) -> VmBackupResult:
    """`backup_vm_to` the repository (the module docstring says the steps)."""
    return backup_vm_to(
        local_target(repo, spec),
        spec,
        changed_since=changed_since,
        tags=tags,
        progress=progress,
        cancel=cancel,
        on_frozen=on_frozen,
        protect_name=protect_name,
        quiesce=quiesce,
        limit_read=limit_read,
    )


def backup_vm_to(
    target: VmTarget,
    spec: VmSpec,
    *,
    changed_since: str = "auto",  # auto | compare | none
    tags: list[str] | None = None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    on_frozen: Any = None,  # test hook: called with the instant (time.time()) it froze
    protect_name: str | None = None,  # a protected source's point (protect/source_points.py)
    quiesce: VmQuiesce | None = None,  # hooks + guest freeze (replaces the plain guest freeze)
    limit_read: int | None = None,  # bytes/s read from the frozen views, all disks together
) -> VmBackupResult:
    """Take one point of the VM (the module docstring says the steps).

    With `quiesce`, the point is application-consistent only when every hook
    and the guest freeze succeeded (the engine's verdict); without, when the
    guest freeze succeeded. `limit_read`: the views are read at most at that
    rate (services/impact.py), which also bounds the block layer's work for
    the backup on the I/O thread the guest writes through."""
    mode, _ = parse_mode(changed_since)
    reads = read_bucket(limit_read)
    repo = target.store
    prefix = vm_bitmap_prefix(repo, spec.name)
    warnings: list[str] = []
    started = now()
    t0 = time.monotonic()
    with target.lease() as lease, ExitStack() as stack:
        parent, parent_disks, parent_maps = vm_parent(target, warnings)
        qmp = stack.enter_context(QmpClient(spec.qmp))
        disks: list[_Disk] = []
        scratch = spec.scratch or str(data_home() / "strongroom" / "scratch")
        for node in spec.disks:
            live = LiveDisk(qmp, node, spec.nbd, scratch)
            stack.callback(live.close_view)  # also undoes a view half opened
            before = parent_disks.get(node)
            parent_map = disk_parent_map(repo, live, before, parent_maps, warnings)
            block_size = parent_map.block_size if parent_map else target.block_size
            parent_bitmap = before.block_lineage().parent_bitmap(prefix) if before else None
            plan = plan_bitmaps(live.bitmaps(), prefix, parent_bitmap)
            disks.append(_Disk(live, plan, parent_map, parent_bitmap, block_size))
        warnings += _scratch_room(scratch, sum(d.live.size for d in disks))
        warnings += reap_inherited_views(lease, [d.live for d in disks])
        # Name our views in the lease before they exist: a crash from here on
        # leaves the next holder the list.
        lease.annotate(views=[d.live.reserve_token() for d in disks])
        for disk in disks:
            disk.live.prepare_view()
        lease.verify()  # another holder may have taken over while we prepared
        actions = [(d.live, ViewPlan(d.plan.add, d.block_size, d.plan.disable)) for d in disks]
        if quiesce is not None:
            held = _engine_instant(quiesce, spec, qmp, actions)
        else:
            held = _guest_instant(spec, qmp, actions, warnings)
        instant, note = held.instant, held.note
        if on_frozen is not None:
            on_frozen(instant)
        for disk in disks:
            _check_lineage(disk, prefix)
        results: list[VmDisk] = []
        summaries: list[dict[str, Any]] = []
        views = []
        for disk in disks:
            read = [] if mode in (TrackerMode.NONE, TrackerMode.COMPARE) else (disk.plan.read or [])
            view = stack.enter_context(closing(disk.live.export_view(read)))
            views.append(view)
            changes = choose_changes(
                mode,
                BitmapTracker.from_plan(view, disk.plan),
                has_parent=disk.parent_map is not None,
                size=view.size,
                block_size=disk.block_size,
            )
            pipeline = ImageBackup(
                repo,
                limit_reads(view, reads),
                disk.block_size,
                disk.parent_map,
                changes,
                progress,
                cancel,
            )
            pipeline.run()
            summary = {
                **pipeline.summary.as_dict(),
                "bitmap": disk.plan.add,
                "bitmap_prefix": prefix,
            }
            summaries.append({"disk": disk.live.node, **summary})
            results.append(
                VmDisk(
                    disk.live.node,
                    disk.live.size,
                    disk.block_size,
                    pipeline.summary.map_root,
                    summary,
                    BlockLineage(pipeline.summary.tracker, disk.plan.add, prefix),
                )
            )
            warnings += pipeline.summary.warnings
        manifest_id = save_vm_manifest(repo, VmManifest(spec.name, results))
        repo.flush()
        lease.verify()  # never commit a point under a lease that passed on
        consistency = "crash-consistent" if held.reason else "application-consistent"
        seconds = time.monotonic() - t0
        extra: dict[str, Any] = {}
        if protect_name is not None:
            tags = [*(tags or []), PROTECT_TAG]
            extra["protect"] = protect_summary(protect_name, held.reason, **held.record)
        point = record_point(
            repo,
            kind=PointKind.VM,
            time=at_instant(instant, started),
            host=target.host,
            paths=[vm_path(spec.name)],
            tree=manifest_id.hex(),
            parent=parent,
            tags=tags,
            consistency=consistency,
            summary={
                **_totals(summaries),
                "disks": summaries,
                "instant": instant,
                "quiesce": note,
                "seconds": round(seconds, 3),
                **extra,
            },
        )
        # Retire what the point superseded: views first (an exported bitmap is busy).
        for disk, view in zip(disks, views, strict=True):
            view.close()
            disk.live.close_view()
            disk.live.remove_bitmaps(disk.plan.retire)
    return VmBackupResult(point, summaries, consistency, note, seconds, warnings, held.reason)


def disk_parent_map(
    repo: ChunkStore,
    live: LiveDisk,
    before: VmDisk | None,
    loaded: dict[str, BlockMap],
    warnings: list[str],
) -> BlockMap | None:
    """The parent point's map of this disk (`loaded`: maps read already, by
    root id), None for a new disk or one that changed size (warned)."""
    if before is None:
        return None
    parent_map = loaded.get(before.map_root)
    if parent_map is None:
        parent_map = load_block_map(repo, bytes.fromhex(before.map_root))
    if parent_map.size != live.size:
        warnings.append(f"disk {live.node} changed size: reading it whole")
        return None
    return parent_map


def reap_inherited_views(lease: VmLeaseHandle, disks: list[LiveDisk]) -> list[str]:
    """The previous holder may have left views on the block layer (their
    copy-before-write jobs tax every write): it named them in the lease,
    whether it died or handed the lease back after a failed teardown. They
    are removed; a warning says so."""
    previous = lease.inherited
    orphans = previous.data.get("views", []) if previous is not None else []
    if isinstance(orphans, list) and orphans and previous is not None:
        reaped = [live.reap_stale_views([str(t) for t in orphans]) for live in disks]
        if any(reaped):
            return [f"removed the frozen views a backup on {previous.host} left"]
    return []


@dataclass
class _Instant:
    """The freezing transaction and what held the guest around it. `reason`:
    why the point is only crash-consistent ("" when it is application-
    consistent); `record`: the `protect` summary's fields of the instant."""

    instant: float
    note: str  # the guest freeze's own words (the summary's `quiesce`)
    reason: str
    record: dict[str, Any] = field(default_factory=dict)


def _guest_instant(
    spec: VmSpec, qmp: QmpClient, actions: list[tuple[LiveDisk, ViewPlan]], warnings: list[str]
) -> _Instant:
    """`backup --vm`: the VM's own guest freeze (agent or commands) around the transaction."""
    quiesce = Quiesce(
        spec.name, spec.guest_agent, spec.freeze_command, spec.thaw_command, spec.freeze_timeout
    )
    frozen, note, problem = False, "", None
    try:
        if quiesce.configured:
            frozen, note = quiesce.freeze()
        instant = freeze_together(qmp, actions)
    finally:
        if quiesce.configured:
            problem = quiesce.thaw()
            if problem:
                warnings.append(problem)
    if quiesce.configured and not frozen:
        warnings.append(f"guest not quiesced ({note}): the point is crash-consistent")
    if frozen and problem:  # the freeze may not have held until the snapshot
        return _Instant(instant, note, problem)
    why = "" if frozen else (note or "the guest is not quiesced (no guest agent or commands)")
    return _Instant(instant, note, why)


def _engine_instant(
    engine: VmQuiesce, spec: VmSpec, qmp: QmpClient, actions: list[tuple[LiveDisk, ViewPlan]]
) -> _Instant:
    """The protection service's instant: the engine's hooks and guest freeze
    around the transaction. A transaction that fails still thaws and runs the
    post hooks (the engine's contract), then the backup fails."""
    target = GuestFreeze(
        spec.name, spec.guest_agent, spec.freeze_command, spec.thaw_command, spec.freeze_timeout
    )
    frozen_at = time.time()
    with engine(target) as q:
        sent = time.time()
        instant = freeze_together(qmp, actions)
    thawed_at = time.time()
    result = q.result
    record = {
        "frozen_at": frozen_at,
        "thawed_at": thawed_at,
        "transaction": {"sent": sent, "returned": instant},
        "quiesce": result.summary(),
    }
    return _Instant(instant, result.freeze_note, result.reason or "", record)


def vm_parent(
    target: VmTarget, warnings: list[str]
) -> tuple[RecoveryPoint | None, dict[str, VmDisk], dict[str, BlockMap]]:
    """The VM's latest point, its disks by name and their maps (adopted by
    the target); none, with a warning, when its manifest is unreadable."""
    points = target.points()
    if not points:
        return None, {}, {}
    parent = points[-1]
    try:
        manifest = load_vm_manifest(target.store, bytes.fromhex(parent.tree))
        maps = target.adopt(manifest)
    except StrongroomError as err:
        warnings.append(f"last point {parent.short_id} is unreadable ({err}): reading all disks")
        return None, {}, {}
    return parent, {d.name: d for d in manifest.disks}, maps


def _scratch_room(scratch: str, disks: int) -> list[str]:
    """QEMU 7.2's backup job fails a guest's write when the overlay that keeps
    the old block cannot grow: say so when the scratch folder could fill."""
    os.makedirs(scratch, exist_ok=True)
    st = os.statvfs(scratch)
    free = st.f_bavail * st.f_frsize
    if free >= disks:
        return []
    return [
        f"scratch folder {scratch} has {free >> 20} MiB free for {disks >> 20} MiB of disks: "
        "writes that overwrite more than that during a backup would fail in the guest"
    ]


def vm_bitmap_prefix(repo: ChunkStore, name: str) -> str:
    """Each VM its own bitmap lineage, apart from `backup --image --qmp`'s
    (`strongroom-<repo>`): one never retires or rotates the other's bitmaps."""
    tag = hashlib.blake2s(name.encode(), digest_size=4).hexdigest()
    return f"strongroom-{repo.config.id[:8]}-vm{tag}"


def _check_lineage(disk: _Disk, prefix: str) -> None:
    """After the transaction, our bitmaps must be exactly the planned ones plus
    the one it started: anything else (a bitmap of ours rotated or removed by
    someone between plan and transaction) means the record may have a gap, so
    this disk is compared instead of trusted."""
    if disk.plan.read is None:
        return
    ours = {b.name for b in disk.live.bitmaps() if is_ours(b.name, prefix)}
    expected = set(disk.plan.retire) | {disk.plan.add}
    if ours != expected:
        disk.plan.read = None
        disk.plan.note = "the dirty bitmaps changed while the snapshot was being taken"


def _totals(disks: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("size", "bytes_read", "bytes_changed", "data_added", "data_added_stored")
    totals: dict[str, Any] = {k: sum(int(d.get(k, 0)) for d in disks) for k in keys}
    trackers = sorted({str(d.get("tracker", "")) for d in disks})
    totals["tracker"] = trackers[0] if len(trackers) == 1 else "+".join(trackers)
    notes = [f"{d['disk']}: {d['tracker_note']}" for d in disks if d.get("tracker_note")]
    if notes:
        totals["tracker_note"] = "; ".join(notes)
    return totals
