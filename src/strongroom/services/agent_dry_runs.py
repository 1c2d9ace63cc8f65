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
"""

from __future__ import annotations

import threading

from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.remote.store import RemoteStore
from strongroom.services.agent_backup import agent_points, find_own
from strongroom.services.agent_images import adopt_parent
from strongroom.services.image_backup import (
    ImageBackupRequest,
    ImageDryRun,
    dry_run_image,
    parent_among,
    source_identity,
)
from strongroom.trackers.choose import TrackerMode, parse_mode
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
    if req.seeds:
        raise UsageError("through a server: no --seed")
    if req.qmp:
        raise UsageError(
            "--dry-run reads image files and NBD exports, not a disk behind --qmp "
            "(its view would start a dirty bitmap)"
        )
    req.changed_since = comparing_tracker(req.changed_since)
    req.host = machine
    req.no_seeds = True
    identity = source_identity(req)
    points = agent_points(store)
    parent: RecoveryPoint | None
    if req.parent:
        parent = find_own(points, req.parent)
        if parent.kind != PointKind.BLOCK:
            raise UsageError(f"point {parent.short_id} is not a block image point")
    else:
        parent = parent_among(points, req, identity)
    parent_map = None
    if parent is not None:
        parent_map = load_block_map(store, bytes.fromhex(parent.tree))
        adopt_parent(store, parent, parent_map)
    found = dry_run_image(store, req, identity, parent, parent_map, progress, cancel)
    lacking = store.lacking(list(found.unknown))
    found.summary.blocks_new = len(lacking)
    found.summary.data_added = sum(found.unknown[c] for c in lacking)
    return found
