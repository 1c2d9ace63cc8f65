"""The protect use case: one cycle (or a loop of them) of the VHD backup mode.

Destinations: a folder or an S3 location receives the VHD chain itself
(protect/destinations.py); a strongroom repository receives each cycle as a
block point of the metadata disk, whose changed blocks are exactly the
cycle's undo keys, so `strongroom export --chain` gives the same VHD chain
back and the data is deduplicated and encrypted like any other point.

A front end builds the options with `protect_options` (which also refuses a
combination that means nothing), opens the destination with `destination`,
and runs `protect_once` or `protect_every`. Through a backup server (the
machine enrolled as its agent) the repository destination is the server's
repository: `RepositoryDestination` over the agent's store
(protect_service.agent_block_target); a folder or S3 chain never involves
the server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from strongroom.config import data_home
from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.pipeline.image_backup import ImageBackup
from strongroom.protect.block_mode import BlockProtection
from strongroom.protect.cycles import CycleResult as CycleResult  # what a cycle reports
from strongroom.protect.cycles import ProtectOptions, StateFolder, check_name, default_name
from strongroom.protect.destinations import Destination as Destination  # the front ends' type
from strongroom.protect.destinations import Shipment, VhdChain
from strongroom.protect.vhd_mode import VhdProtection
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.impact import limit_backend
from strongroom.services.points import list_points
from strongroom.services.recording import record_point
from strongroom.services.volume_cycle import VolumeTarget
from strongroom.sources.block import RawSource
from strongroom.storage import open_backend
from strongroom.trackers.changes import ChangeSet, blocks_touched
from strongroom.types import ProgressCallback, no_progress

PROTECT_TAG = "protect"


def default_state_folder(name: str) -> str:
    return str(data_home() / "strongroom" / "protect" / name)


class RepositoryDestination:
    """Cycles as block points: `protect:NAME` in the point's paths, the cycle's
    VHD identity in its summary (so a crash between storing the point and
    committing the local state is settled by finding the point).

    The points go where `target` says (services/volume_cycle.py's
    `VolumeTarget`, as a protected volume's): a repository, or the agent's
    backup server (the machine's own block points; the parent's chunks taken
    as stored, so a cycle sends only the blocks whose content is new). A
    `Repository` given directly is the local one."""

    wants_vhd = False

    def __init__(
        self,
        repo: Repository | VolumeTarget,
        progress: ProgressCallback = no_progress,
        *,
        description: str | None = None,
    ) -> None:
        if isinstance(repo, VolumeTarget):
            self.target = repo
            self.description = description or "the backup server"
        else:
            self.target = _local_target(repo)
            self.description = description or repo.backend.location
        self.store: ChunkStore = self.target.store
        self.report = progress

    def object_name(self, name: str, cycle: int) -> str:
        return f"{name}-{cycle:06d}"

    def absolute_path(self, name: str, cycle: int) -> str:
        return f"{self.description}#{self.object_name(name, cycle)}"

    def _points(self, name: str) -> list[RecoveryPoint]:
        return self.target.points(f"protect:{name}")

    def arrived(self, name: str, cycle: int, uuid: str) -> str | None:
        for point in self._points(name):
            record = point.summary.get("protect") or {}
            if record.get("uuid") == uuid and record.get("cycle") == cycle:
                return point.id
        return None

    def ship(self, shipment: Shipment) -> str:
        record = shipment.record
        parent = None
        if shipment.changed is not None:
            parent_uuid = record.get("parent_uuid")
            found = [
                p
                for p in self._points(shipment.name)
                if (p.summary.get("protect") or {}).get("uuid") == parent_uuid
            ]
            parent = found[-1] if found else None
        parent_map = None
        if parent is not None:
            parent_map = load_block_map(self.store, bytes.fromhex(parent.tree))
            self.target.adopt_parent(parent, parent_map)
        block_size = parent_map.block_size if parent_map else self.target.block_size
        blocks = -(-shipment.disk_size // block_size)
        if parent_map is not None and shipment.changed is not None:
            changes = ChangeSet("e2undo", blocks_touched(shipment.changed, block_size, blocks))
        else:
            changes = ChangeSet("full")
        started = datetime.now(UTC)
        t0 = time.monotonic()
        with contextlib.closing(RawSource(shipment.disk_path, shipment.disk_size)) as source:
            pipeline = ImageBackup(
                self.store, source, block_size, parent_map, changes, progress=self.report
            )
            pipeline.run()
        summary = pipeline.summary
        point = record_point(
            self.store,
            kind=PointKind.BLOCK,
            time=started,
            host=self.target.host,
            paths=[f"protect:{shipment.name}"],
            tree=summary.map_root,
            parent=parent,
            tags=[PROTECT_TAG],
            summary={
                **summary.as_dict(),
                "protect": record,
                "seconds": round(time.monotonic() - t0, 3),
            },
        )
        return point.id

    def close(self) -> None:
        """The caller owns the repository (or the agent's store)."""


def _local_target(repo: Repository) -> VolumeTarget:
    """The repository's own points (a damaged one is left out, unreported:
    it is not this source's to judge)."""

    def points(identity: str) -> list[RecoveryPoint]:
        return [
            p
            for p in list_points(repo, on_damaged=lambda *_: None)
            if p.kind == PointKind.BLOCK and p.paths == [identity]
        ]

    return VolumeTarget(repo, repo.config.id, repo.config.block_size, socket.gethostname(), points)


def protect_options(
    source: str,
    *,
    to: str | None,
    to_repository: bool,
    every: float | None = None,
    cycles: int | None = None,
    name: str | None = None,
    size: int | None = None,
    block_size: int = 2 << 20,
    verify: bool = False,
    image_format: str | None = None,
    allow_backing: bool = False,
) -> ProtectOptions:
    """The options of protecting `source`, checked before any work: exactly one
    destination (`to` or `to_repository`), `cycles` only with `every`, a name
    safe in object names (default: the source's), and a destination that takes
    this kind of source."""
    if (to is None) == (not to_repository):
        raise UsageError("say where cycles go: --to DEST or --to-repository")
    if cycles is not None and every is None:
        raise UsageError("--cycles goes with --every")
    options = ProtectOptions(
        name=check_name(name) if name else default_name(source),
        size=size,
        block_size=block_size,
        verify=verify,
        image_format=image_format,
        allow_backing=allow_backing,
    )
    check_destination(source, wants_vhd=not to_repository)
    return options


@contextmanager
def destination(
    to: str | None, repo: Repository | None, limit_upload: int | None = None
) -> Iterator[Destination]:
    """Where the cycles go: into `repo` as block points (the caller owns and
    locks it, and holds its writes to a limit), else to the folder or S3
    location `to` as a VHD chain, closed on leaving, written at most at
    `limit_upload` bytes/s (`--limit-upload`)."""
    if repo is not None:
        yield RepositoryDestination(repo)
        return
    if to is None:
        raise UsageError("say where cycles go: --to DEST or --to-repository")
    chain = chain_destination(to, limit_upload)
    try:
        yield chain
    finally:
        chain.close()


def chain_destination(location: str, limit_upload: int | None = None) -> Destination:
    """A folder or S3 location that receives the VHD files themselves (at
    most `limit_upload` bytes/s: services/impact.py)."""
    return VhdChain(limit_backend(open_backend(location, "--to destination"), limit_upload))


def check_destination(source: str, wants_vhd: bool) -> None:
    """A repository takes a directory's cycles; a disk goes there by `backup --image`."""
    if not wants_vhd and not os.path.isdir(source):
        raise UsageError(
            f"{source} is a block source: back it up into a repository with "
            "'strongroom backup --image' (same change tracking, plus dirty bitmaps)"
        )


def protect_once(
    source: str,
    destination: Destination,
    options: ProtectOptions,
    state_folder: str | None = None,
    progress: ProgressCallback = no_progress,
) -> CycleResult:
    """Run one cycle; the state folder is locked for its duration. A directory is
    protected through its metadata disk, anything else as a block source."""
    mode = VhdProtection if os.path.isdir(source) else BlockProtection
    check_destination(source, destination.wants_vhd)
    state = StateFolder(state_folder or default_state_folder(options.name))
    try:
        return mode(source, destination, state, options, progress).run_cycle()
    finally:
        state.close()


def protect_every(
    interval: float,
    run: Callable[[], CycleResult],
    report: Callable[[CycleResult], None],
    stop: threading.Event,
    cycles: int | None = None,
) -> None:
    """Run a cycle every `interval` seconds (start to start) until `stop` is set
    or `cycles` cycles ran. A failed cycle propagates: the state is consistent
    (rolled back) and the caller decides whether to go on."""
    done = 0
    while not stop.is_set():
        started = time.monotonic()
        report(run())
        done += 1
        if cycles is not None and done >= cycles:
            return
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
