"""The image backup use case: open the source, pick the tracker, record the point.

Sources, in the order `--image` is understood:
- `nbd://` / `nbd+unix://` URIs: read over NBD. With `--qmp` the URI names
  the block layer's NBD server and the disk is frozen through QMP
  (`sources/live.py`); without it, the export is read as it stands.
- a block device or a raw file: read directly.
- a VHD (footer at the end, or its copy at the start): read with its parent
  chain by `sources/vhd.py`; only the comparison tracks its changes.
- any other image qemu reads: through a private qemu-nbd.

Trackers (`--changed-since`): `auto` takes the dirty-bitmap lineage when
strongroom controls the block layer (QMP, or a qcow2 file nobody has open),
else the comparison with the parent; `bitmap[:NAME]`, `overlay`, `compare`
and `none` force one. Whatever was asked, a tracker that cannot prove it saw
every change falls back to the comparison and says why.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field

from strongroom.errors import SourceError, StrongroomError, UsageError
from strongroom.model.blockmap import BlockMap, check_geometry
from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage
from strongroom.model.origin import PointSeeds
from strongroom.model.point import RecoveryPoint, now
from strongroom.model.seed import Seed
from strongroom.nbd.uri import parse_nbd_uri
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.pipeline.image_backup import ImageBackup, ImageBackupSummary
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.image_seeds import (
    check_seed_geometry,
    choose_seed,
    inherited_seeds,
    point_seeds,
    seed_map,
)
from strongroom.services.impact import limit_reads, read_bucket
from strongroom.services.points import PointFilter, find_point, list_points
from strongroom.services.recording import record_point
from strongroom.services.seeds import SeedRepository, find_seeds
from strongroom.sources.block import BlockSource, NbdSource
from strongroom.sources.images import OpenRules, open_image, probe_image
from strongroom.sources.live import LiveDisk
from strongroom.sources.qemu import QemuImageSource
from strongroom.sources.qemu_img import (
    ImageInfo,
    OfflineBitmaps,
    backing_chain_identity,
    file_identity,
)
from strongroom.sources.qmp import QmpClient
from strongroom.sources.vhd import VhdSource
from strongroom.trackers.base import ChangeTracker
from strongroom.trackers.bitmaps import BitmapPlan, BitmapTracker, plan_bitmaps
from strongroom.trackers.changes import ChangeSet
from strongroom.trackers.choose import TrackerMode, choose_changes, fallback, parse_mode
from strongroom.trackers.overlay import OverlayTracker
from strongroom.types import ProgressCallback, no_progress


@dataclass
class ImageBackupRequest:
    source: str
    changed_since: str = "auto"  # auto | none | compare | bitmap[:NAME] | overlay
    qmp: str | None = None
    node: str | None = None
    scratch: str | None = None
    tags: list[str] = field(default_factory=list)
    host: str = ""
    parent: str | None = None
    block_size: int | None = None
    image_format: str | None = None  # --format: the file's format, never probed
    allow_backing: bool = False  # --allow-backing: read the files the image names
    seeds: list[str] = field(default_factory=list)  # --seed NAME: the golden image it builds on
    no_seeds: bool = False  # --no-seeds: no automatic choice of a seed
    limit_read: int | None = None  # --limit-read: bytes/s read from the source (None: no limit)
    jobs: int | None = None  # --jobs: sealing workers (None: strongroom.cpu.default_jobs())

    @property
    def rules(self) -> OpenRules:
        return OpenRules(self.image_format, self.allow_backing)


@dataclass
class ImageBackupResult:
    point: RecoveryPoint
    summary: ImageBackupSummary
    parent: str | None
    seconds: float
    notices: list[str] = field(default_factory=list)  # e.g. the other files read


def is_nbd_uri(source: str) -> bool:
    return source.startswith(("nbd://", "nbd+unix://", "nbds://"))


def source_identity(req: ImageBackupRequest) -> str:
    """The `paths` entry of the point: what a later backup matches its parent by."""
    if req.qmp:
        address = (
            req.qmp
            if req.qmp.startswith("tcp:")
            else os.path.abspath(req.qmp.removeprefix("unix:"))
        )
        return f"qmp:{address}#{req.node or _export_name(req.source)}"
    if is_nbd_uri(req.source):
        return req.source
    return os.path.abspath(req.source)


def _choose_parent(
    repo: Repository, req: ImageBackupRequest, identity: str
) -> RecoveryPoint | None:
    if req.parent:
        parent = find_point(repo, req.parent)
        if parent.kind != PointKind.BLOCK:
            raise UsageError(f"point {parent.short_id} is not a block image point")
        return parent
    return parent_among(list_points(repo, on_damaged=lambda *_: None), req, identity)


def parent_among(
    points: list[RecoveryPoint], req: ImageBackupRequest, identity: str
) -> RecoveryPoint | None:
    """The parent of a backup of `identity` among `points` (oldest first): the
    latest block point of the same host and source, else (a new overlay on
    an image backed up before) the latest point of its backing image."""
    blocks = [p for p in points if p.kind == PointKind.BLOCK]
    same = [p for p in blocks if PointFilter(hosts=[req.host], paths=[identity]).matches(p)]
    if same:
        return same[-1]
    backing = _backing_identity(req)
    if backing is not None:
        mine = [p for p in blocks if p.block_lineage().image_identity == backing]
        if mine:
            return mine[-1]
    return None


def _backing_identity(req: ImageBackupRequest) -> str | None:
    """The identity of the image's backing file, if the user allowed reading it."""
    if req.qmp or is_nbd_uri(req.source) or not os.path.isfile(req.source):
        return None
    if not req.allow_backing:
        return None  # its backing file is not read, let alone matched
    try:
        info = probe_image(req.source, rules=req.rules)
    except SourceError:
        return None
    return file_identity(info.backing) if info.backing else None


class _ImageJob:
    """The resources of one image backup, released in reverse by an ExitStack."""

    def __init__(self, repo: ChunkStore, req: ImageBackupRequest, stack: ExitStack) -> None:
        self.repo = repo
        self.req = req
        self.stack = stack
        self.mode, self.bitmap_name = parse_mode(req.changed_since)
        self.prefix = self.bitmap_name or f"strongroom-{repo.config.id[:8]}"
        self.plan: BitmapPlan | None = None
        self.remove_bitmaps: Callable[[list[str]], None] | None = None
        self.image_path = ""  # an image file: its path (its identity is taken after the backup)
        self.image_format: str | None = None
        self.backing_chain: list[str] = []
        self.backing_files: list[str] = []
        self.chain_changed = False  # a backing file differs from the parent's record
        self.notices: list[str] = []

    def open(
        self, parent: RecoveryPoint | None, parent_map: BlockMap | None, block_size: int
    ) -> tuple[BlockSource, ChangeSet]:
        req = self.req
        lineage = parent.block_lineage() if parent is not None else BlockLineage()
        parent_bitmap = lineage.parent_bitmap(self.prefix)
        if (req.qmp or is_nbd_uri(req.source)) and (req.image_format or req.allow_backing):
            raise UsageError("--format and --allow-backing apply to image files, not NBD exports")
        if req.qmp:
            return self._open_live(parent_map, parent_bitmap, block_size)
        if is_nbd_uri(req.source):
            return self._open_nbd(parent_map, block_size)
        path = req.source
        if not os.path.exists(path):
            raise SourceError(f"{path}: no such file or device")
        info = probe_image(path, lineage.image_format, req.rules)
        self.image_path = info.path
        self.image_format = info.format
        self._show_followed(path, info.followed)
        self.backing_chain = backing_chain_identity(info) if info.backing else []
        if parent is not None and list(lineage.backing_chain) != self.backing_chain:
            self.chain_changed = True
        if info.format in ("vhd", "raw") and self.mode in (TrackerMode.BITMAP, TrackerMode.OVERLAY):
            if info.format == "vhd":
                raise UsageError(
                    f"{path} is a VHD: a VHD carries no dirty bitmaps"
                    " (use --changed-since compare or none)"
                )
            raise UsageError(f"{path} is a raw image: it has no {self.mode} to track changes")
        if info.format not in ("vhd", "raw"):
            if self.mode == TrackerMode.OVERLAY or (
                self.mode == TrackerMode.AUTO
                and info.backing
                and lineage.image_identity is not None
                and file_identity(info.backing) == lineage.image_identity
            ):
                return self._open_overlay(info, lineage, parent_map, block_size)
            if info.format == "qcow2" and self.mode in (TrackerMode.AUTO, TrackerMode.BITMAP):
                return self._open_offline_bitmaps(info, parent_map, parent_bitmap, block_size)
            if self.mode == TrackerMode.BITMAP:
                raise UsageError(f"{path} is {info.format}: only qcow2 images carry dirty bitmaps")
        # A VHD is read by strongroom (qemu's vpc driver ignores a differencing
        # disk's parent); only the comparison tracks its changes, or a raw file's.
        src = self.stack.enter_context(closing(open_image(info)))
        if isinstance(src, VhdSource):
            self._show_followed(path, src.followed)
        return src, self._fallback(parent_map)

    def _show_followed(self, path: str, followed: list[str]) -> None:
        """Every other file this backup reads, by its real path: in the point's
        lineage and summary, and said to the user."""
        if followed:
            self.backing_files = list(followed)
            self.notices.append(f"{path} also reads: {' -> '.join(followed)}")

    # --- sources -------------------------------------------------------------

    def _open_live(
        self, parent_map: BlockMap | None, parent_bitmap: str | None, block_size: int
    ) -> tuple[BlockSource, ChangeSet]:
        req = self.req
        if not is_nbd_uri(req.source):
            raise UsageError("with --qmp, --image is the NBD URI of the block layer's server")
        qmp = self.stack.enter_context(QmpClient(req.qmp or ""))
        node = req.node or _export_name(req.source)
        live = LiveDisk(qmp, node, req.source, req.scratch)
        plan = plan_bitmaps(live.bitmaps(), self.prefix, parent_bitmap)
        if self.mode == TrackerMode.OVERLAY:
            raise UsageError("--changed-since overlay needs an image file, not a disk behind --qmp")
        if self.mode in (TrackerMode.NONE, TrackerMode.COMPARE):
            plan.read = None
        self.stack.callback(live.close_view)  # also undoes a view half opened
        view = live.open_view(plan.add, block_size, plan.disable, plan.read or [])
        self.stack.enter_context(closing(view))
        self.plan = plan

        def retire(names: list[str]) -> None:
            view.close()  # an exported bitmap is busy: end the view first
            live.close_view()
            live.remove_bitmaps(names)

        self.remove_bitmaps = retire
        return view, self._bitmap_changes(view, plan, parent_map, block_size)

    def _open_offline_bitmaps(
        self,
        info: ImageInfo,
        parent_map: BlockMap | None,
        parent_bitmap: str | None,
        block_size: int,
    ) -> tuple[BlockSource, ChangeSet]:
        control = OfflineBitmaps(info.path, info.follow)
        plan = plan_bitmaps(info.bitmaps, self.prefix, parent_bitmap)
        if self.chain_changed and plan.read is not None:
            plan.read = None
            plan.note = "a backing file changed since the parent point (bitmaps do not see it)"
        try:
            control.checkpoint(plan.add, block_size, plan.disable)
        except SourceError as err:
            if self.mode == TrackerMode.BITMAP:
                raise
            # Read-only storage, a backing file in use, ...: back up without.
            src = self.stack.enter_context(closing(QemuImageSource(info)))
            return src, self._fallback(parent_map, f"no dirty bitmap could be started ({err})")
        view = self.stack.enter_context(closing(QemuImageSource(info, plan.read or [])))
        self.plan = plan

        def retire(names: list[str]) -> None:
            view.close()  # qemu-img needs the image's write lock, which qemu-nbd holds
            control.remove(names)

        self.remove_bitmaps = retire
        return view, self._bitmap_changes(view, plan, parent_map, block_size)

    def _open_nbd(
        self, parent_map: BlockMap | None, block_size: int
    ) -> tuple[BlockSource, ChangeSet]:
        contexts = [f"qemu:dirty-bitmap:{self.bitmap_name}"] if self.bitmap_name else []
        view = self.stack.enter_context(closing(NbdSource(self.req.source, contexts)))
        if self.mode == TrackerMode.OVERLAY:
            raise UsageError("--changed-since overlay needs an image file, not an NBD export")
        if self.mode == TrackerMode.BITMAP and parent_map is not None:
            if not self.bitmap_name:
                raise UsageError(
                    "over a plain NBD export, name the bitmap: --changed-since bitmap:NAME"
                )
            tracker = BitmapTracker(
                view,
                [self.bitmap_name],
                note=(
                    f"bitmap {self.bitmap_name} read as exported; "
                    "without --qmp the caller rotates it"
                ),
                missing=f"the export has no bitmap {self.bitmap_name}",
            )
            return view, self._choose(tracker, parent_map, view.size, block_size)
        return view, self._fallback(parent_map)

    def _open_overlay(
        self,
        info: ImageInfo,
        lineage: BlockLineage,
        parent_map: BlockMap | None,
        block_size: int,
    ) -> tuple[BlockSource, ChangeSet]:
        view = self.stack.enter_context(closing(QemuImageSource(info, allocation_depth=True)))
        tracker = OverlayTracker(view, info.path, info.backing, self.backing_chain, lineage)
        return view, self._choose(tracker, parent_map, view.size, block_size)

    # --- trackers ------------------------------------------------------------

    def _bitmap_changes(
        self, view: NbdSource, plan: BitmapPlan, parent_map: BlockMap | None, block_size: int
    ) -> ChangeSet:
        return self._choose(BitmapTracker.from_plan(view, plan), parent_map, view.size, block_size)

    def _choose(
        self, tracker: ChangeTracker, parent_map: BlockMap | None, size: int, block_size: int
    ) -> ChangeSet:
        return choose_changes(
            self.mode, tracker, has_parent=parent_map is not None, size=size, block_size=block_size
        )

    def _fallback(self, parent_map: BlockMap | None, why: str = "") -> ChangeSet:
        return fallback(self.mode, parent_map is not None, why)

    def after_point(self) -> list[str]:
        """Retire the bitmaps this point superseded; warnings for any that stay."""
        if self.plan is None or self.remove_bitmaps is None:
            return []
        try:
            self.remove_bitmaps(self.plan.retire)
        except SourceError as err:
            return [f"old dirty bitmaps stay (harmless, retried next time): {err}"]
        return []

    def lineage(self, tracker: str) -> BlockLineage:
        """What the next backup of this source starts from (taken after the
        backup: the image's identity is its state once read)."""
        return BlockLineage(
            tracker=tracker,
            bitmap=self.plan.add if self.plan is not None else None,
            bitmap_prefix=self.prefix if self.plan is not None else None,
            image_format=self.image_format,
            image_identity=file_identity(self.image_path) if self.image_path else None,
            backing_chain=tuple(self.backing_chain),
            backing_files=tuple(self.backing_files),
        )


def summary_fields(lineage: BlockLineage, image_file: bool) -> dict[str, object]:
    """The lineage as format 1 kept it in the summary (still written: older
    strongroom reads it there, and users see it)."""
    fields: dict[str, object] = {}
    if image_file:
        fields["image_format"] = lineage.image_format
        fields["backing_chain"] = list(lineage.backing_chain)
    if lineage.backing_files:
        fields["backing_files"] = list(lineage.backing_files)
    if lineage.bitmap is not None:
        fields["bitmap"] = lineage.bitmap
        fields["bitmap_prefix"] = lineage.bitmap_prefix
    if image_file:
        fields["image_identity"] = lineage.image_identity
    return fields


def _export_name(uri: str) -> str:
    return parse_nbd_uri(uri).export


def _pinned_seed(
    repo: SeedRepository, req: ImageBackupRequest, parent: RecoveryPoint | None
) -> tuple[Seed, BlockMap] | None:
    """The seed named by --seed (one at most for an image), with its map; None
    when none was named or the parent already builds on it (the parent's map is
    the closer base then)."""
    if not req.seeds:
        return None
    if req.no_seeds:
        raise UsageError("--seed and --no-seeds contradict each other")
    named = find_seeds(repo, req.seeds)
    if len(named) > 1:
        raise UsageError("a disk image builds on one seed: give --seed once")
    seed = named[0]
    base = seed_map(repo, seed)
    used = parent.seeds.used if parent is not None and parent.seeds is not None else []
    if any(u.id == seed.id for u in used):
        return None
    if req.block_size and req.block_size != base.block_size:
        raise UsageError(
            f"--block-size {req.block_size}: seed {seed.name} is stored in blocks of"
            f" {base.block_size} bytes, and a seeded backup uses the seed's"
        )
    return seed, base


def store_image(
    repo: Repository,
    req: ImageBackupRequest,
    block_size: int,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageBackupSummary:
    """Read the image as `backup --image` reads it and store its blocks and map,
    recording no point (`seed add` records a seed instead)."""
    with ExitStack() as stack:
        job = _ImageJob(repo, req, stack)
        source, changes = job.open(None, None, block_size)
        pipeline = ImageBackup(
            repo, source, block_size, None, changes, progress, cancel, workers=req.jobs
        )
        pipeline.run()
        return pipeline.summary


def backup_image(
    repo: Repository,
    req: ImageBackupRequest,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageBackupResult:
    """Back up `req.source` into a block point of the local repository."""
    begun = time.monotonic()
    req.host = req.host or socket.gethostname()
    identity = source_identity(req)
    parent = _choose_parent(repo, req, identity)
    return run_image_backup(repo, req, identity, parent, repo, progress, cancel, begun=begun)


def run_image_backup(
    store: ChunkStore,
    req: ImageBackupRequest,
    identity: str,
    parent: RecoveryPoint | None,
    seeds_repo: SeedRepository | None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    parent_map: BlockMap | None = None,
    begun: float | None = None,
) -> ImageBackupResult:
    """The backup once its parent is chosen, into `store` (a local repository,
    or an agent's RemoteStore); its seeds are matched, pinned or inherited
    from `seeds_repo` (the repository, or the server's seeds as an agent
    reads them: services/agent_seeds.py; None: no seed at all).
    `parent_map`: the parent's map when the caller loaded it already.
    `begun`: when the caller started choosing the parent (`time.monotonic`).

    The point's summary splits the fixed cost of an incremental:
    `parent_seconds` (choosing the parent point, loading the chunk index and
    the parent's map), then within `seconds`: `open_seconds` (the source and
    its tracker: bitmaps, qemu-nbd, block status) and `store_seconds` (reading
    and storing the blocks and the map); the rest of `seconds` is seeds and
    retiring the superseded bitmaps."""
    begun = time.monotonic() if begun is None else begun
    warnings: list[str] = []
    if parent is None:
        parent_map = None
    elif parent_map is None:
        try:
            parent_map = load_block_map(store, bytes.fromhex(parent.tree))
        except StrongroomError as err:
            warnings.append(
                f"parent point {parent.short_id} has an unreadable block map ({err}); "
                "reading the whole disk (run 'strongroom check')"
            )
            parent = None
    seeded = _pinned_seed(seeds_repo, req, parent) if seeds_repo is not None else None
    if seeded is not None and parent is not None:
        warnings.append(
            f"parent point {parent.short_id} does not build on seed {seeded[0].name}:"
            " comparing with the seed instead"
        )
        parent, parent_map = None, None
    if seeded is not None:
        block_size = seeded[1].block_size
    elif parent_map is not None:
        block_size = parent_map.block_size
    else:
        block_size = req.block_size or store.config.block_size
    try:
        check_geometry(0, block_size)
    except ValueError as err:
        raise UsageError(f"--block-size: {err}") from None
    started = now()
    t0 = time.monotonic()
    with ExitStack() as stack:
        job = _ImageJob(store, req, stack)
        source, changes = job.open(parent, parent_map, block_size)
        opened = time.monotonic()
        if parent is None and seeds_repo is not None:
            # A first backup: the seed's map plays the parent's part (every
            # block is read and compared with it: the "compare" tracker).
            if seeded is not None:
                check_seed_geometry(seeded[0], seeded[1], source.size, req.source)
            elif not req.no_seeds:
                seeded = choose_seed(seeds_repo, source, block_size)
            if seeded is not None:
                parent_map = seeded[1]
                changes = ChangeSet("compare", None, f"compared with seed {seeded[0].name}")
        reading = limit_reads(source, read_bucket(req.limit_read))  # services/impact.py
        pipeline = ImageBackup(
            store,
            reading,
            block_size,
            parent_map,
            changes,
            progress=progress,
            cancel=cancel,
            workers=req.jobs,
        )
        stored = time.monotonic()
        new_map = pipeline.run()
        stored = time.monotonic() - stored
        summary = pipeline.summary
        summary.warnings[:0] = warnings
        seeds: PointSeeds | None = None
        if seeded is not None:
            seeds = point_seeds(seeded[0], new_map, seeded[1])
        elif (
            seeds_repo is not None
            and parent is not None
            and parent.seeds is not None
            and not req.no_seeds
        ):
            seeds, why = inherited_seeds(seeds_repo, parent.seeds, new_map)
            if why:
                summary.warnings.append(f"{why}: this point builds on no seed")
        # Retire superseded bitmaps before the point: a crash in between only
        # costs the next backup a comparison (its parent's bitmap is gone).
        summary.warnings += job.after_point()
        lineage = job.lineage(summary.tracker)
        seconds = time.monotonic() - t0  # from the source's opening to the map stored
        point = record_point(
            store,
            kind=PointKind.BLOCK,
            time=started,
            host=req.host,
            paths=[identity],
            tree=summary.map_root,
            parent=parent,
            tags=req.tags,
            summary={
                **summary.as_dict(),
                **summary_fields(lineage, bool(job.image_path)),
                "seconds": round(seconds, 3),
                "parent_seconds": round(t0 - begun, 3),
                "open_seconds": round(opened - t0, 3),
                "store_seconds": round(stored, 3),
            },
            lineage=lineage,
            seeds=seeds,
        )
    return ImageBackupResult(point, summary, point.parent, seconds, job.notices)


@dataclass
class ImageDryRun:
    """What `dry_run_image` found: the summary a real run would start from
    (nothing added), and the chunks read that the store did not know."""

    summary: ImageBackupSummary
    parent: str | None
    seconds: float
    unknown: dict[bytes, int]  # chunk id -> length
    notices: list[str] = field(default_factory=list)


def dry_run_image(
    store: ChunkStore,
    req: ImageBackupRequest,
    identity: str,
    parent: RecoveryPoint | None,
    parent_map: BlockMap | None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageDryRun:
    """Read and cut what a backup on `parent` would (its tracker: the caller
    takes one that changes nothing on the source, `compare` or `none`), store
    nothing and record no point. No seeds (a dry run through a server)."""
    if parent is None:
        parent_map = None
    block_size = parent_map.block_size if parent_map is not None else None
    block_size = block_size or req.block_size or store.config.block_size
    try:
        check_geometry(0, block_size)
    except ValueError as err:
        raise UsageError(f"--block-size: {err}") from None
    t0 = time.monotonic()
    with ExitStack() as stack:
        job = _ImageJob(store, req, stack)
        source, changes = job.open(parent, parent_map, block_size)
        reading = limit_reads(source, read_bucket(req.limit_read))
        pipeline = ImageBackup(store, reading, block_size, parent_map, changes, progress=progress,
                               cancel=cancel, workers=req.jobs, dry_run=True)  # fmt: skip
        pipeline.run()
    seconds = time.monotonic() - t0
    parent_id = parent.id if parent is not None else None
    return ImageDryRun(pipeline.summary, parent_id, seconds, pipeline.dry_new, job.notices)
