"""Export of block recovery points as VHDs: one disk, a differencing disk, a chain.

A point's blocks are loaded on a few worker threads in address order (at most
`depth` chunks in flight, so memory does not grow with the disk) and streamed
into `formats.vhd.write_vhd`; holes are left out.

Contracts:
- Atomic: each VHD is written to a temporary file in the destination folder and
  renamed over the destination only once complete and fsynced, and the folder is
  fsynced after the rename (strongroom/atomic.py); on any error the temporary
  file is removed and the destination is untouched. The file is private to
  its owner (mode 0600): it holds backed-up data.
- A VHD's unique id is derived from its point's id (`point_uuid`), so two
  exports of one point carry the same id, and a differencing export can check
  that the parent it is given really is an export of its base point (a
  differencing disk records its parent's id; readers refuse a parent with
  another one).
- A differencing export holds exactly the blocks whose map entry differs
  between the two points: changed data as data, blocks that became holes as
  explicit zeros (a differencing disk has no "zero" state: unwritten sectors
  read from the parent). Extents are whole strongroom blocks (4 KiB or more),
  which also keeps libvhdi's partial-bitmap-byte bug out of the way.
- Points of different virtual sizes are refused: a VHD chain cannot resize.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from strongroom.atomic import atomic_write
from strongroom.errors import IntegrityError, UsageError
from strongroom.formats.vhd import (
    ParentInfo,
    VhdError,
    Zeros,
    check_size,
    read_footer,
    write_vhd,
)
from strongroom.model.blockmap import BlockMap
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.seed import Seed
from strongroom.pipeline.blockmaps import load_block_map
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.image_restore import point_map
from strongroom.services.image_seeds import seed_map, verify_golden
from strongroom.services.points import list_points
from strongroom.services.vms import manifest_of
from strongroom.sources.vhd import VhdSource
from strongroom.types import Progress, ProgressCallback, no_progress

VhdType = Literal["fixed", "dynamic"]
FORMATS = ("vhd",)
_NAMESPACE = uuidlib.UUID("5b0d6f3e-6a57-4c1e-9d8e-73726f6f6d76")  # strongroom VHD exports
_WORKERS = 4
_DEPTH = 2 * _WORKERS + 4
Extent = tuple[int, bytes | Zeros]


@dataclass
class ExportSummary:
    """What one export wrote."""

    point_id: str
    path: str
    kind: str  # fixed, dynamic or differencing
    size: int  # virtual disk size
    file_size: int
    blocks_written: int  # strongroom blocks in the file (data or explicit zeros)
    bytes_written: int  # of block data
    uuid: str
    parent: str | None = None  # the parent VHD's path (differencing)
    base_point_id: str | None = None
    base_seed: str | None = None  # the seed's name, when the parent is a golden image

    def as_dict(self) -> dict[str, object]:
        """The fields, `kind` as "type" (the JSON name since the first release)."""
        return {("type" if k == "kind" else k): v for k, v in asdict(self).items()}


def check_format(fmt: str) -> None:
    if fmt.lower() not in FORMATS:
        raise UsageError(
            f"export format {fmt!r} is not supported: only --format vhd exists for now"
        )


def point_uuid(point: RecoveryPoint) -> uuidlib.UUID:
    """The unique id of every VHD that holds `point` (as a whole disk or on a chain)."""
    return uuidlib.uuid5(_NAMESPACE, point.id)


def _check_geometry(point: RecoveryPoint, block_map: BlockMap) -> None:
    try:
        check_size(block_map.size)
    except ValueError:
        raise UsageError(
            f"point {point.short_id} is {block_map.size} bytes, not a whole number of"
            " 512-byte sectors: it cannot be a VHD"
        ) from None


def _load_blocks(
    repo: ChunkStore,
    block_map: BlockMap,
    blocks: Iterable[int],
    progress: Progress,
    report: ProgressCallback,
) -> Iterator[Extent]:
    """(offset, data) of `blocks` (increasing), loaded ahead on worker threads.

    A hole yields `Zeros`; a damaged or missing chunk raises (an export with a
    silently zeroed block would be a lie that no reader can detect).
    """

    def load(block: int) -> Extent:
        offset, length = block_map.extent(block)
        cid = block_map.get(block)
        if cid is None:
            return offset, Zeros(length)
        data = repo.load_chunk(cid, BlobType.DATA, length)
        if len(data) != length:
            raise IntegrityError(
                f"chunk {cid.hex()[:16]} of the block at offset {offset} holds"
                f" {len(data)} bytes, expected {length}"
            )
        return offset, data

    pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="export")
    queue: deque[Future[Extent]] = deque()
    todo = iter(blocks)
    try:
        while True:
            while len(queue) < _DEPTH:
                nxt = next(todo, None)
                if nxt is None:
                    break
                queue.append(pool.submit(load, nxt))
            if not queue:
                return
            offset, data = queue.popleft().result()
            if not isinstance(data, Zeros):
                progress.bytes_done += len(data)
                progress.bytes_added += len(data)
            progress.files_done += 1  # blocks
            report(progress)
            yield offset, data
    finally:
        for fut in queue:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def load_blocks(repo: Repository, block_map: BlockMap) -> Iterator[Extent]:
    """Every block of `block_map` in address order, `(offset, data)` with
    holes as `Zeros`, loaded ahead on worker threads (at most a few chunks
    in flight): what a streamed export (the dashboard's disk download)
    reads. Close the iterator to stop the loaders early."""
    state = Progress(job="export", files_total=block_map.blocks)
    return _load_blocks(repo, block_map, range(block_map.blocks), state, no_progress)


def _throttled(report: ProgressCallback) -> ProgressCallback:
    """Report at most every 256 blocks (the CLI throttles further)."""
    count = [0]

    def cb(p: Progress) -> None:
        count[0] += 1
        if count[0] % 256 == 0:
            report(p)

    return cb


def _write(
    out_path: Path,
    size: int,
    extents: Iterable[Extent],
    **kw: object,
) -> tuple[int, uuidlib.UUID]:
    result: list[tuple[int, uuidlib.UUID]] = []

    def write(f: BinaryIO) -> None:
        info = write_vhd(f, size, extents, **kw)  # type: ignore[arg-type]
        result.append((info.file_size, info.uuid))

    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out_path, write)
    finally:
        if isinstance(extents, Generator):
            extents.close()  # stop the loaders now, not when the traceback goes
    return result[0]


def export_vhd(
    repo: ChunkStore,
    point: RecoveryPoint,
    out_path: str | os.PathLike[str],
    *,
    kind: VhdType = "dynamic",
    progress: ProgressCallback = no_progress,
) -> ExportSummary:
    """Write block point `point` as a fixed or dynamic VHD at `out_path` (atomic).

    Raises `UsageError` for a point that is not a block image or not a whole
    number of sectors, `VhdTooLarge` beyond 2040 GiB, and the repository's
    errors for damaged data (the destination is then left as it was).
    """
    if kind not in ("fixed", "dynamic"):
        raise UsageError(f"VHD type {kind!r}: use fixed or dynamic")
    block_map = point_map(repo, point)
    return _export_map(repo, point, block_map, Path(out_path), kind, point_uuid(point), progress)


def export_vm_vhds(
    repo: ChunkStore,
    point: RecoveryPoint,
    out_dir: str | os.PathLike[str],
    *,
    kind: VhdType = "dynamic",
    progress: ProgressCallback = no_progress,
) -> list[ExportSummary]:
    """Every disk of VM point `point` as a fixed or dynamic VHD `DISK.vhd` in
    `out_dir` (each file atomic), in the manifest's order. Each file's unique
    id derives from the point and the disk, so the disks of one point never
    share one. A disk name that is not one plain path component (a forged
    manifest) is refused before anything is written."""
    if kind not in ("fixed", "dynamic"):
        raise UsageError(f"VHD type {kind!r}: use fixed or dynamic")
    manifest = manifest_of(repo, point)
    for disk in manifest.disks:
        name = disk.name
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise IntegrityError(f"point {point.short_id}: a disk name is not a file name")
    folder = Path(out_dir)
    return [
        _export_map(
            repo,
            point,
            load_block_map(repo, bytes.fromhex(disk.map_root)),
            folder / f"{disk.name}.vhd",
            kind,
            uuidlib.uuid5(_NAMESPACE, f"{point.id}/{disk.name}"),
            progress,
        )
        for disk in manifest.disks
    ]


def _export_map(
    repo: ChunkStore,
    point: RecoveryPoint,
    block_map: BlockMap,
    path: Path,
    kind: VhdType,
    ident: uuidlib.UUID,
    progress: ProgressCallback,
) -> ExportSummary:
    _check_geometry(point, block_map)
    data_blocks = np.flatnonzero(~block_map.hole_mask()).tolist()
    state = Progress(job="export", files_total=len(data_blocks), bytes_total=block_map.data_bytes())
    extents = _load_blocks(repo, block_map, data_blocks, state, _throttled(progress))
    file_size, ident = _write(
        path, block_map.size, extents, kind=kind, uuid=ident, timestamp=point.time
    )
    progress(state)
    return ExportSummary(
        point_id=point.id,
        path=str(path),
        kind=kind,
        size=block_map.size,
        file_size=file_size,
        blocks_written=len(data_blocks),
        bytes_written=state.bytes_done,
        uuid=str(ident),
    )


def changed_blocks(base: BlockMap, new: BlockMap) -> list[int]:
    """Blocks whose map entry differs between two maps of one geometry, in order."""
    return np.flatnonzero((base.ids != new.ids).any(axis=1)).tolist()


def _check_parent(parent_vhd: Path, base: RecoveryPoint, size: int) -> None:
    """Refuse a parent that is not a valid VHD export of `base` of `size` bytes."""
    if not parent_vhd.is_file():
        raise UsageError(f"parent VHD {parent_vhd} does not exist")
    try:
        footer = read_footer(parent_vhd)  # validates cookie, checksum, fields
    except VhdError as err:
        raise UsageError(f"parent {parent_vhd} is not a valid VHD: {err}") from None
    if footer.current_size != size:
        raise UsageError(
            f"parent {parent_vhd} is a disk of {footer.current_size} bytes, but point"
            f" {base.short_id} is {size} bytes: it is not an export of that point"
        )
    if footer.uuid != point_uuid(base):
        raise UsageError(
            f"parent {parent_vhd} is not a strongroom export of point {base.short_id}"
            f" (its unique id is {footer.uuid}, expected {point_uuid(base)});"
            f" export the base point first: strongroom export {base.short_id} BASE.vhd"
        )


def export_vhd_incremental(
    repo: Repository,
    point: RecoveryPoint,
    base_point: RecoveryPoint,
    parent_vhd: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    progress: ProgressCallback = no_progress,
) -> ExportSummary:
    """Write a differencing VHD at `out_path` (atomic) whose parent is `parent_vhd`.

    `parent_vhd` must be an export of `base_point` (checked by its size and the
    unique id derived from the point). The child holds the blocks whose map
    entry differs between the two points. The parent locators record both the
    absolute path and the path relative to `out_path`'s folder.

    Raises `UsageError` for a wrong or damaged parent, points of different sizes
    or block sizes, and the repository's errors for damaged data.
    """
    new_map = point_map(repo, point)
    base_map = point_map(repo, base_point)
    _check_geometry(point, new_map)
    if base_map.size != new_map.size:
        raise UsageError(
            f"points {base_point.short_id} ({base_map.size} bytes) and {point.short_id}"
            f" ({new_map.size} bytes) differ in size: a differencing VHD cannot resize"
            " its parent; export the later point as a whole disk instead"
        )
    if base_map.block_size != new_map.block_size:
        raise UsageError(
            f"points {base_point.short_id} and {point.short_id} have different block sizes"
        )
    parent_path = Path(parent_vhd)
    _check_parent(parent_path, base_point, new_map.size)
    return _write_differencing(
        repo, point, new_map, base_map, parent_path, Path(out_path), base_point.id, progress
    )


def _write_differencing(
    repo: Repository,
    point: RecoveryPoint,
    new_map: BlockMap,
    base_map: BlockMap,
    parent_path: Path,
    path: Path,
    base_id: str | None,
    progress: ProgressCallback,
    base_seed: str | None = None,
) -> ExportSummary:
    """The differencing VHD at `path` over the checked parent `parent_path`:
    the blocks whose entry differs between `base_map` and `new_map`."""
    if path.resolve() == parent_path.resolve():
        raise UsageError(f"{path} is the parent VHD: write the child to another file")
    blocks = changed_blocks(base_map, new_map)
    data_bytes = sum(new_map.extent(b)[1] for b in blocks if new_map.get(b) is not None)
    state = Progress(job="export", files_total=len(blocks), bytes_total=data_bytes)
    extents = _load_blocks(repo, new_map, blocks, state, _throttled(progress))
    parent = ParentInfo.from_file(parent_path, path)
    file_size, ident = _write(
        path,
        new_map.size,
        extents,
        kind="differencing",
        parent=parent,
        uuid=point_uuid(point),
        timestamp=point.time,
    )
    progress(state)
    return ExportSummary(
        point_id=point.id,
        path=str(path),
        kind="differencing",
        size=new_map.size,
        file_size=file_size,
        blocks_written=len(blocks),
        bytes_written=state.bytes_done,
        uuid=str(ident),
        parent=str(parent_path),
        base_point_id=base_id,
        base_seed=base_seed,
    )


def export_vhd_from_seed(
    repo: Repository,
    point: RecoveryPoint,
    seed: Seed,
    parent_vhd: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    verify_full: bool = False,
    progress: ProgressCallback = no_progress,
) -> ExportSummary:
    """Write a differencing VHD at `out_path` (atomic) whose parent is
    `parent_vhd`, a VHD of `seed`'s golden image (made by any tool: its own
    unique id goes into the child). The parent is checked by its virtual size
    and its content against the seed's map (a sample, or every block); the
    child holds the blocks where the point differs from the seed, holes where
    the seed has data as explicit zeros. The point need not build on `seed`
    (any BLOCK seed of its geometry is a valid base), only match its geometry.
    """
    new_map = point_map(repo, point)
    _check_geometry(point, new_map)
    base_map = seed_map(repo, seed)
    if base_map.size != new_map.size or base_map.block_size != new_map.block_size:
        raise UsageError(
            f"point {point.short_id} ({new_map.size} bytes in blocks of {new_map.block_size})"
            f" and seed {seed.name} ({base_map.size} bytes in blocks of {base_map.block_size})"
            " differ in geometry: export the point as a whole disk instead"
        )
    parent_path = Path(parent_vhd)
    if not parent_path.is_file():
        raise UsageError(f"parent VHD {parent_path} does not exist")
    try:
        footer = read_footer(parent_path)
        golden = VhdSource(parent_path)
    except VhdError as err:
        raise UsageError(f"parent {parent_path} is not a valid VHD: {err}") from None
    try:
        if footer.current_size != base_map.size or golden.size != base_map.size:
            raise UsageError(
                f"parent {parent_path} is a disk of {footer.current_size} bytes, but seed"
                f" {seed.name} is {base_map.size} bytes: it is not that seed's image"
            )
        verify_golden(repo, golden, seed, base_map, full=verify_full, what=str(parent_path))
    finally:
        golden.close()
    return _write_differencing(
        repo, point, new_map, base_map, parent_path, Path(out_path), None, progress, seed.name
    )


def chain_name(index: int, point: RecoveryPoint) -> str:
    return f"{index:03d}-{point.id[:8]}.vhd"


def chain_points(repo: Repository, source: str) -> list[RecoveryPoint]:
    """Block points of `source` (their `paths` entry, or that path made absolute), oldest first."""
    wanted = {source}
    if "://" not in source and ":" not in source.split("/", 1)[0]:
        wanted.add(os.path.abspath(source))
    found = [
        p
        for p in list_points(repo)
        if p.kind == PointKind.BLOCK and len(p.paths) == 1 and p.paths[0] in wanted
    ]
    if not found:
        raise UsageError(f"no block recovery point of {source} (see strongroom snapshots)")
    return found


def export_chain(
    repo: Repository,
    points: list[RecoveryPoint],
    out_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback = no_progress,
) -> list[ExportSummary]:
    """Write `points` (oldest first) as a VHD chain in `out_dir`.

    The first point becomes a dynamic VHD, each later one a differencing VHD
    whose parent is the previous file; names are `NNN-<point id 8>.vhd`, all in
    one folder (readers resolve a parent in its child's folder). Each file is
    written atomically; if one fails, the files before it stay (a valid, shorter
    chain) and the error is raised. Points of different sizes are refused before
    anything is written.
    """
    if not points:
        raise UsageError("no points to export")
    # The summary's size is enough to refuse early; each export checks the maps.
    sizes = {int(p.summary.get("size", -1)) for p in points}
    if len(sizes) > 1 and -1 not in sizes:
        raise UsageError(
            "the points differ in size (the disk was resized): a VHD chain cannot resize;"
            " export them separately"
        )
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    done: list[ExportSummary] = []
    previous: Path | None = None
    for index, point in enumerate(points):
        path = folder / chain_name(index, point)
        if previous is None:
            summary = export_vhd(repo, point, path, kind="dynamic", progress=progress)
        else:
            summary = export_vhd_incremental(
                repo, point, points[index - 1], previous, path, progress=progress
            )
        done.append(summary)
        previous = path
    return done
