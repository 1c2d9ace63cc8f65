"""An agent's block image points through its backup server: backup,
restore and VHD export (docs/server.md, "Agents"; docs/design.md §9i).

The image pipelines run unchanged over a `RemoteStore`: the source is read,
and its changes tracked, on the agent as a local backup does (`--changed-since`
compare, a QEMU dirty bitmap, an overlay); the tracker's state lives with the
source (a bitmap in the image or the block layer), its lineage in the point.
The parent is the machine's own latest block point of the same source, read
from the server (`/agent/points` lists only the machine's own points); its
map is loaded through the server and its chunks are assumed stored (the
server verified them when it committed the parent), so an incremental asks
about and sends only the blocks whose content is new. A first backup builds
on the server's image seed as a local one does (`--seed NAME`, or the seed
whose blocks match a sample of the source's; --no-seeds: none), the seed read
through the server (services/agent_seeds.py `ServerSeeds`); an incremental
inherits its parent's seed.
A restore or export plans the map's blocks in address order, so the store
fetches them ahead in batches.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from strongroom.errors import UsageError
from strongroom.model.blockmap import BlockMap, decode_root
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.scope import FULL, ScopeSpec
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.pipeline.image_restore import ImageRestoreSummary
from strongroom.remote.store import RemoteStore
from strongroom.repository.format import BlobType
from strongroom.services.agent_backup import agent_points, find_own, restore_through_server
from strongroom.services.agent_seeds import ServerSeeds
from strongroom.services.export import ExportSummary, VhdType, export_vhd, export_vm_vhds
from strongroom.services.image_backup import (
    ImageBackupRequest,
    ImageBackupResult,
    parent_among,
    run_image_backup,
    source_identity,
)
from strongroom.services.image_restore import restore_map
from strongroom.services.restore import (
    FilesRestored,
    HowToRestore,
    ImageRestored,
    RestoreRequest,
    ScopedRestore,
    VmRestored,
    restore_image_scoped,
)
from strongroom.types import ProgressCallback, no_progress


def backup_image_through_server(
    store: RemoteStore,
    machine: str,
    req: ImageBackupRequest,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageBackupResult:
    """Back up `req.source` as a block point of `machine` through the server."""
    identity, parent, parent_map = image_parent(store, machine, req)
    seeds = ServerSeeds(store)  # the golden image it builds on, as locally
    return run_image_backup(store, req, identity, parent, seeds, progress, cancel, parent_map)


def image_parent(
    store: RemoteStore, machine: str, req: ImageBackupRequest
) -> tuple[str, RecoveryPoint | None, BlockMap | None]:
    """For a backup (or a dry run) of `req.source` as `machine`'s: the
    source's identity, and the parent point (`req.parent`, or the one
    `parent_among` picks of the machine's own) with its map, adopted."""
    req.host = machine
    identity = source_identity(req)
    points = agent_points(store)
    if req.parent:
        parent: RecoveryPoint | None = find_own(points, req.parent)
        if parent is not None and parent.kind != PointKind.BLOCK:
            raise UsageError(f"point {parent.short_id} is not a block image point")
    else:
        parent = parent_among(points, req, identity)
    parent_map = None
    if parent is not None:
        parent_map = load_block_map(store, bytes.fromhex(parent.tree))
        adopt_parent(store, parent, parent_map)
    return identity, parent, parent_map


def adopt_parent(store: RemoteStore, parent: RecoveryPoint, parent_map: BlockMap) -> None:
    """The parent's map and data chunks, known stored (the server checked
    them at its commit): an incremental sends only what is new."""
    root_id = bytes.fromhex(parent.tree)
    root = decode_root(store.load_chunk(root_id, BlobType.TREE))
    store.assume_stored([root_id, *(s for s in root.segments if s is not None)])
    store.assume_stored(_data_ids(parent_map))


def _data_ids(block_map: BlockMap) -> list[bytes]:
    rows = block_map.ids[~block_map.hole_mask()]
    return [r.tobytes() for r in np.unique(rows, axis=0)] if len(rows) else []


def own_image_point(store: RemoteStore, ref: str) -> tuple[RecoveryPoint, BlockMap]:
    """One of the machine's block points and its map, its blocks planned for
    reading in address order."""
    point = find_own(agent_points(store), ref)
    if point.kind != PointKind.BLOCK:
        raise UsageError(f"point {point.short_id} is a {point.kind} point, not a block image")
    block_map = load_block_map(store, bytes.fromhex(point.tree))
    data = np.flatnonzero(~block_map.hole_mask()).tolist()
    store.plan_reads((block_map.ids[b].tobytes(), block_map.extent(b)[1]) for b in data)
    return point, block_map


def restore_image_through_server(
    store: RemoteStore,
    ref: str,
    target: str,
    fmt: str = "raw",
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> tuple[RecoveryPoint, ImageRestoreSummary]:
    """Write one of the machine's block points to `target` (a file, a block
    device or an NBD URI), holes as holes."""
    point, block_map = own_image_point(store, ref)
    return point, restore_map(store, block_map, target, fmt, progress, cancel)


def restore_own_point(
    store: RemoteStore,
    ref: str,
    target: str,
    fmt: str = "raw",
    progress: ProgressCallback = no_progress,
    *,
    includes: list[str] | None = None,
    how: HowToRestore | None = None,
    jobs: int | None = None,
    scope: ScopeSpec = FULL,
    lacks_file: str | None = None,
    backing: tuple[str | None, bool] = (None, False),
) -> FilesRestored | ImageRestored | VmRestored:
    """`restore --server`: a files point (all of it, or its paths `includes`;
    `how`, `scope` and `lacks_file` as a local restore) into the folder
    `target`, a block point onto the file, device or NBD URI `target` (with
    `--scope user`: a qcow2 overlay on the golden image of `backing`,
    (GOLDEN, --verify-backing), which is checked against the seed read
    through the server), or a VM point of the machine's cluster into the
    folder `target` (DISK.raw)."""
    point = find_own(agent_points(store), ref)
    if point.kind != PointKind.FILES and (includes or (how is not None and not how.is_default)):
        raise UsageError(
            "through a server: --include, --overwrite, --delete and --dry-run restore files points"
        )
    if point.kind != PointKind.FILES and lacks_file is not None:
        raise UsageError(f"--lacks-file: point {point.short_id} is an image point")
    if point.kind != PointKind.BLOCK and (backing[0] or backing[1]):
        raise UsageError("--backing goes with image points (--scope user of a disk image)")
    if point.kind == PointKind.VM and not scope.is_full:
        raise UsageError(f"--scope {scope}: point {point.short_id} is a VM point (scopes: full)")
    if point.kind == PointKind.VM:  # one of the cluster's: every disk into the folder
        from strongroom.services.agent_vms import restore_vm_through_server

        return VmRestored(point, restore_vm_through_server(store, point, target, fmt, progress))
    if point.kind == PointKind.BLOCK and (not scope.is_full or backing[0]):
        req = RestoreRequest(point.id, target, [], fmt)
        req.scope, (req.backing, req.verify_backing) = scope, backing
        return restore_image_scoped(store, ServerSeeds(store), point, req, progress, None)
    if point.kind == PointKind.BLOCK:
        found, summary = restore_image_through_server(store, point.id, target, fmt, progress)
        return ImageRestored(found, summary)
    if fmt != "raw":
        raise UsageError("--format applies to image points")
    scoped = ScopedRestore()
    found, files = restore_through_server(store, point.id, target, progress, includes, how=how,
                                          jobs=jobs, scope=scope, lacks_file=lacks_file,
                                          scoped=scoped)  # fmt: skip
    return FilesRestored(found, files, scoped)


def export_image_through_server(
    store: RemoteStore,
    ref: str,
    dest: str | os.PathLike[str],
    kind: VhdType = "dynamic",
    progress: ProgressCallback = no_progress,
) -> tuple[RecoveryPoint, list[ExportSummary]]:
    """One of the machine's block points as a fixed or dynamic VHD `dest`
    (atomic), or a VM point of its cluster as one VHD per disk in the folder
    `dest`; the point and what was written."""
    point = find_own(agent_points(store), ref)
    if point.kind == PointKind.VM:
        return point, export_vm_vhds(store, point, dest, kind=kind, progress=progress)
    point, _ = own_image_point(store, point.id)
    return point, [export_vhd(store, point, dest, kind=kind, progress=progress)]
