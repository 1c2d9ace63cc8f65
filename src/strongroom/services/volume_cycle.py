"""One cycle of a protected volume: freeze, the #5 transaction, thaw at once, read the changes.

1. plan the bitmaps (trackers/bitmaps.py): the one the parent point started is
   read, ours still recording stop, a new one starts;
2. prepare the fleece node (sources/live.py) while writers run;
3. freeze the file system (`quiesce`, plain `fsfreeze` by default), run ONE
   QMP `transaction` (new bitmap, old ones disabled, copy-before-write job:
   the point-in-time view), thaw at once. Writers are held only for that
   instant; the time is measured and recorded (`held_ms`);
4. export the view with the stopped bitmaps and read only the dirty blocks
   while writers continue; the point is a block map of the whole virtual
   disk that shares every unchanged block with its parent;
5. record the point, then tear the view down and retire the old bitmaps.

A cycle that fails never becomes a point: the bitmaps it stopped stay, the
parent's bitmap too, so the next cycle reads their union (every write since
the parent). The record may have a gap, and the cycle compares every block
with the parent instead, saying why, when: the parent's bitmap is gone, a
bitmap is inconsistent (the daemon died: QEMU marks a persistent bitmap
in-use while the image is open), the volume is marked out of sync, or the
bitmaps changed during the transaction.

A daemon that is not running is noticed before anything else: the volume is
marked out of sync, and the cycle reads the image file itself (nobody writes
it any more: the file system on top has lost its device), compared with the
parent block by block: a crash-consistent point of every acknowledged write.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, closing
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import SourceError, StrongroomError, UsageError
from strongroom.model.blockmap import BlockMap
from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage
from strongroom.model.point import RecoveryPoint, at_instant, now
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.pipeline.image_backup import ImageBackup, ImageBackupSummary
from strongroom.protect.quiesce import Quiescing
from strongroom.protect.source_points import PROTECT_TAG, protect_summary
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.points import PointFilter, list_points
from strongroom.services.recording import record_point
from strongroom.sources.block import BlockSource
from strongroom.sources.images import OpenRules, open_image, probe_image
from strongroom.sources.live import LiveDisk, ViewPlan, freeze_together
from strongroom.sources.qmp import QmpClient
from strongroom.sources.volume import daemon_alive, fsfreeze
from strongroom.sources.volume_state import NODE, VolumeState, load_state, save_state, volume_lock
from strongroom.trackers.bitmaps import BitmapPlan, BitmapTracker, is_ours, plan_bitmaps
from strongroom.trackers.changes import ChangeSet
from strongroom.trackers.choose import TrackerMode, choose_changes, fallback, parse_mode
from strongroom.types import ProgressCallback, no_progress

# What holds the writers: called with the mount folder, entered around the
# transaction, exited (thawed) at once. The hooks engine (pre/post commands,
# a watchdog) plugs in here. A StrongroomError on entering means "not
# quiesced" (the snapshot is taken anyway, crash-consistent); a non-empty
# string as the context's value is why the point is only crash-consistent
# although writers were held (a hook failed, the freeze held).
Quiesce = Callable[[str], AbstractContextManager[object]]


@dataclass
class VolumeCycleResult:
    point: RecoveryPoint
    consistency: str
    tracker: str
    held_ms: float | None  # writers held (freeze to thaw); None: not frozen
    frozen_at: float | None  # wall clock just before the freeze began
    thawed_at: float | None  # wall clock just after the thaw returned
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def volume_identity(state: VolumeState) -> str:
    """The point's `paths` entry: what the next cycle finds its parent by."""
    return f"volume:{state.image}"


def volume_bitmap_prefix(repo: Repository, state: VolumeState) -> str:
    """Each repository its own lineage on the volume: two repositories
    protecting one volume never retire each other's bitmaps."""
    return f"strongroom-{repo.config.id[:8]}-vol{state.id[:8]}"


def volume_points(repo: Repository, state: VolumeState) -> list[RecoveryPoint]:
    flt = PointFilter(paths=[volume_identity(state)])
    return [p for p in list_points(repo, flt) if p.kind == PointKind.BLOCK]


@dataclass
class VolumeTarget:
    """Where a volume's points go: a repository, or the agent's server
    (services/protect_service.py). `points(identity)`: the volume's block
    points, oldest first; `adopt_parent`: the parent's chunks known stored
    (a RemoteStore then never asks about them)."""

    store: ChunkStore
    repository_id: str
    block_size: int
    host: str
    points: Callable[[str], list[RecoveryPoint]]
    adopt_parent: Callable[[RecoveryPoint, BlockMap], None] = lambda _p, _m: None

    @classmethod
    def local(cls, repo: Repository) -> VolumeTarget:
        def points(identity: str) -> list[RecoveryPoint]:
            flt = PointFilter(paths=[identity])
            return [p for p in list_points(repo, flt) if p.kind == PointKind.BLOCK]

        return cls(repo, repo.config.id, repo.config.block_size, socket.gethostname(), points)


def volume_cycle(
    repo: Repository | VolumeTarget,
    volume: VolumeState | str,
    *,
    quiesce: Quiesce | None = None,
    changed_since: str = "auto",
    tags: list[str] | None = None,
    block_size: int | None = None,
    freeze_timeout: float = 10.0,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    protect_name: str | None = None,
) -> VolumeCycleResult:
    """Take one point of the attached volume (its record, or its image path).

    `protect_name`: the point is one of that protected source (the `protect`
    tag and summary map, protect/source_points.py), for the protection service.

    `quiesce` defaults to a plain `fsfreeze` of the mount bounded by
    `freeze_timeout`. The volume's record is updated either way: the point,
    the time writers were held, whether the tracker is in sync, the error."""
    mode, name = parse_mode(changed_since)
    if name or mode == TrackerMode.OVERLAY:
        raise UsageError("a volume's cycle takes --changed-since auto, compare or none")
    image = volume.image if isinstance(volume, VolumeState) else os.path.realpath(volume)
    with volume_lock(image):
        state = load_state(image)
        if state is None:
            raise UsageError(f"{image}: the volume is not attached")
        try:
            target = repo if isinstance(repo, VolumeTarget) else VolumeTarget.local(repo)
            cycle = _Cycle(target, state, mode, tags, block_size, progress, cancel)
            cycle.freeze_timeout = freeze_timeout
            cycle.protect_name = protect_name
            if daemon_alive(state):
                result = cycle.live(quiesce or (lambda m: fsfreeze(m, freeze_timeout)))
            else:
                result = cycle.offline()
        except StrongroomError as err:
            state.last_error = str(err)
            save_state(state)
            raise
        state.last_point = result.point.id or ""
        state.last_error = ""
        state.held_ms = result.held_ms or 0.0
        save_state(state)
        return result


class _Cycle:
    def __init__(
        self,
        target: VolumeTarget,
        state: VolumeState,
        mode: TrackerMode,
        tags: list[str] | None,
        block_size: int | None,
        progress: ProgressCallback,
        cancel: threading.Event | None,
    ) -> None:
        self.target = target
        self.repo = target.store
        self.state = state
        self.mode = mode
        self.tags = tags
        self.progress = progress
        self.cancel = cancel
        self.warnings: list[str] = []
        self.freeze_timeout = 10.0
        self.protect_name: str | None = None
        self.started = now()
        self.t0 = time.monotonic()
        self.prefix = f"strongroom-{target.repository_id[:8]}-vol{state.id[:8]}"
        self.parent, self.parent_map = self._parent()
        if self.parent_map is not None:
            self.block_size = self.parent_map.block_size
        else:
            self.block_size = block_size or target.block_size

    def _parent(self) -> tuple[RecoveryPoint | None, BlockMap | None]:
        points = self.target.points(volume_identity(self.state))
        if not points:
            return None, None
        parent = points[-1]
        try:
            block_map = load_block_map(self.repo, bytes.fromhex(parent.tree))
            self.target.adopt_parent(parent, block_map)
            return parent, block_map
        except StrongroomError as err:
            self.warnings.append(
                f"last point {parent.short_id} is unreadable ({err}): reading the whole volume"
            )
            return None, None

    # --- the daemon runs ------------------------------------------------------

    def live(self, quiesce: Quiesce) -> VolumeCycleResult:
        state = self.state
        with ExitStack() as stack:
            # Bounded like the freeze: a block layer that stops answering
            # during the transaction ends it, and the thaw follows at once.
            qmp = stack.enter_context(QmpClient(state.qmp, timeout=max(self.freeze_timeout, 5.0)))
            disk = LiveDisk(qmp, NODE, state.nbd_uri, state.scratch)
            stack.callback(disk.close_view)  # also undoes a view half opened
            if self.parent_map is not None and self.parent_map.size != disk.size:
                self.warnings.append("the volume changed size: reading it whole")
                self.parent, self.parent_map = None, None
            lineage = self.parent.block_lineage() if self.parent is not None else None
            plan = plan_bitmaps(
                disk.bitmaps(), self.prefix, lineage.parent_bitmap(self.prefix) if lineage else None
            )
            if not state.in_sync and plan.read is not None:
                plan.read, plan.note = None, f"the volume was out of sync ({state.sync_note})"
            if self.mode != TrackerMode.AUTO:
                plan.read = None
            disk.prepare_view()
            held = self._freeze(qmp, disk, plan, quiesce)
            self._check_lineage(disk, plan)
            read = plan.read or []
            dirty = _dirty_bytes(qmp, read)
            view = stack.enter_context(closing(disk.export_view(read)))
            changes = choose_changes(
                self.mode,
                BitmapTracker.from_plan(view, plan),
                has_parent=self.parent_map is not None,
                size=view.size,
                block_size=self.block_size,
            )
            summary = self._read(view, changes)
            extra = {"dirty_bytes": dirty, "bitmap": plan.add, "bitmap_prefix": self.prefix}
            result = self._record(summary, held, plan.add, extra)
            # Retire what the point superseded: the view first (an exported bitmap is busy).
            view.close()
            disk.close_view()
            disk.remove_bitmaps(plan.retire)
        if not state.in_sync:
            state.in_sync, state.sync_note = True, ""
        return result

    def _freeze(self, qmp: QmpClient, disk: LiveDisk, plan: BitmapPlan, quiesce: Quiesce) -> _Held:
        """The transaction between freeze and thaw; writers held as briefly as that."""
        actions = [(disk, ViewPlan(plan.add, self.block_size, plan.disable))]
        held = _Held()
        entered = False
        frozen_at, t_start = time.time(), time.monotonic()
        try:
            with quiesce(self.state.mount) as value:
                entered = True
                t_frozen = time.monotonic()
                held.instant = freeze_together(qmp, actions)
                held.transaction_ms = (time.monotonic() - t_frozen) * 1000
                held.freeze_ms = (t_frozen - t_start) * 1000
            if isinstance(value, Quiescing):  # the quiesce engine: hooks and freeze
                held.reason = value.result.reason or ""
                held.quiesce = value.result.summary()
            elif isinstance(value, str) and value:
                held.reason = value
        except StrongroomError as err:
            if not entered:
                # Not quiesced (no mount, a hook failed): the snapshot is still
                # atomic for the block layer, only crash-consistent.
                held.reason = f"not frozen ({err})"
                held.instant = freeze_together(qmp, actions)
                return held
            if held.instant is None:
                raise  # the transaction failed: nothing was frozen
            self.warnings.append(f"thaw: {err}")
        held.ms = (time.monotonic() - t_start) * 1000
        held.frozen_at, held.thawed_at = frozen_at, time.time()
        return held

    def _check_lineage(self, disk: LiveDisk, plan: BitmapPlan) -> None:
        """Our bitmaps after the transaction must be the planned ones plus the
        new one; else someone rotated or removed one meanwhile: compare."""
        if plan.read is None:
            return
        ours = {b.name for b in disk.bitmaps() if is_ours(b.name, self.prefix)}
        if ours != set(plan.retire) | {plan.add}:
            plan.read, plan.note = None, "the dirty bitmaps changed during the transaction"

    # --- the daemon is gone -----------------------------------------------------

    def offline(self) -> VolumeCycleResult:
        state = self.state
        why = f"the volume's daemon (pid {state.pid}) is not running"
        state.in_sync, state.sync_note = False, why
        save_state(state)
        self.warnings.append(f"{why}: reading the image file as it stands (crash-consistent)")
        info = probe_image(state.image, rules=OpenRules(state.format))
        with closing(open_image(info)) as src:
            if self.parent_map is not None and self.parent_map.size != src.size:
                self.parent, self.parent_map = None, None
            mode = TrackerMode.COMPARE if self.mode == TrackerMode.AUTO else self.mode
            changes = fallback(mode, self.parent_map is not None, why)
            summary = self._read(src, changes)
        return self._record(summary, _Held(reason=why), None, {})

    # --- both -------------------------------------------------------------------

    def _read(self, source: BlockSource, changes: ChangeSet) -> ImageBackupSummary:
        pipeline = ImageBackup(
            self.repo, source, self.block_size, self.parent_map, changes, self.progress, self.cancel
        )
        pipeline.run()
        self.warnings += pipeline.summary.warnings
        return pipeline.summary

    def _record(
        self,
        summary: ImageBackupSummary,
        held: _Held,
        bitmap: str | None,
        extra: dict[str, Any],
    ) -> VolumeCycleResult:
        consistency = "crash-consistent" if held.reason else "application-consistent"
        doc: dict[str, Any] = {
            **summary.as_dict(),
            **extra,
            "volume": self.state.image,
            "instant": held.instant,
            "held_ms": None if held.ms is None else round(held.ms, 3),
            "freeze_ms": None if held.freeze_ms is None else round(held.freeze_ms, 3),
            "transaction_ms": None
            if held.transaction_ms is None
            else round(held.transaction_ms, 3),
            "seconds": round(time.monotonic() - self.t0, 3),
        }
        if held.reason:
            doc["consistency_note"] = held.reason
        tags = self.tags
        if self.protect_name is not None:
            tags = [*(tags or []), PROTECT_TAG]
            doc["protect"] = protect_summary(
                self.protect_name,
                held.reason,
                frozen_at=held.frozen_at,
                thawed_at=held.thawed_at,
                quiesce=held.quiesce,
            )
        point = record_point(
            self.repo,
            kind=PointKind.BLOCK,
            time=at_instant(held.instant, self.started),
            host=self.target.host,
            paths=[volume_identity(self.state)],
            tree=summary.map_root,
            parent=self.parent,
            tags=tags,
            summary=doc,
            consistency=consistency,
            lineage=BlockLineage(
                summary.tracker, bitmap, self.prefix if bitmap is not None else None
            ),
        )
        return VolumeCycleResult(
            point,
            consistency,
            summary.tracker,
            held.ms,
            held.frozen_at,
            held.thawed_at,
            doc,
            self.warnings,
        )


@dataclass
class _Held:
    instant: float | None = None
    ms: float | None = None
    frozen_at: float | None = None
    thawed_at: float | None = None
    reason: str = ""  # why the point is only crash-consistent
    freeze_ms: float | None = None  # of `ms`: until the file system was frozen
    transaction_ms: float | None = None  # of `ms`: the QMP transaction
    quiesce: dict[str, Any] | None = None  # the quiesce engine's summary, when it ran


def _dirty_bytes(qmp: QmpClient, names: list[str]) -> int:
    """Bytes the read bitmaps mark dirty (each bitmap counted; they may overlap)."""
    if not names:
        return 0
    try:
        nodes = qmp.execute("query-named-block-nodes", {"flat": True}) or []
    except SourceError:
        return 0
    total = 0
    for node in nodes:
        if node.get("node-name") == NODE:
            for b in node.get("dirty-bitmaps", []) or []:
                if b.get("name") in names:
                    total += int(b.get("count", 0))
    return total
