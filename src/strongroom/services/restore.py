"""The restore use case: a point's files back onto disk, and `restore_point`,
which restores whatever kind of point it is given.

`restore_point` settles every usage question inside the repository session,
before anything is written: a VM filter that does not match, `--include` or
`--partition` on a VM point, `--disk` on a point that is not a VM's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from strongroom.cpu import resolve_jobs
from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.model.scope import FULL, ScopeKind, ScopeSpec
from strongroom.model.tree import DIR, FILE
from strongroom.pipeline.image_restore import ImageRestoreSummary
from strongroom.pipeline.restore import (
    UNCHANGED,
    FileReport,
    FileRestore,
    RestoreSummary,
    Selection,
)
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkReader, ChunkStore
from strongroom.services.image_files import open_image_filesystem
from strongroom.services.image_include import extract_with_full_path
from strongroom.services.image_restore import restore_image, restore_overlay
from strongroom.services.points import PointFilter, find_point, require_files
from strongroom.services.scope import (
    bind_point,
    check_lacks_file,
    default_lacks_file,
    lacking_paths,
    write_lacks_file,
)
from strongroom.services.seeds import SeedRepository
from strongroom.services.vm_restore import restore_vm
from strongroom.services.vms import vm_path
from strongroom.services.walk import find_node, iter_tree
from strongroom.types import ProgressCallback, no_progress

__all__ = [  # with what the CLI takes from the pipeline through here
    "UNCHANGED",
    "FileReport",
    "FilesRestored",
    "HowToRestore",
    "ImageFilesRestored",
    "ImageRestored",
    "RestoreRequest",
    "Restored",
    "ScopedRestore",
    "VmRestored",
    "point_path",
    "restore_files",
    "restore_image_scoped",
    "restore_point",
    "restore_totals",
]


@dataclass
class ScopedRestore:
    """What a scoped restore adds to the summary: the notice a user must see,
    and for `--scope user` the seed files the point lacks and where they went."""

    notice: str | None = None
    lacks: list[bytes] | None = None  # None: no list written (not --scope user)
    lacks_file: str | None = None


def restore_files(
    repo: ChunkStore,
    point: RecoveryPoint,
    target: str,
    includes: list[str] | None = None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    scope: ScopeSpec = FULL,
    lacks_file: str | None = None,
    scoped: ScopedRestore | None = None,
    jobs: int | None = None,
    how: HowToRestore | None = None,
) -> RestoreSummary:
    """Restore a files point; with a scope other than `full`, only that part of
    it (docs/seeds.md, "Scoped recovery"), and for `user` the list of seed
    files it lacks into `lacks_file` (default TARGET/.strongroom-lacks).

    Every question is settled before anything is written: the scope against
    the point's seeds, the includes, the lacks list (decoded and checked) and
    where it goes. `scoped`, if given, receives what the caller reports.
    `jobs`: the workers (None: `cpu.default_jobs()`; 1: the calling thread).
    `how`: what to do with what is in the target (--overwrite, --delete,
    --dry-run) and who hears of each path."""
    how = how or HowToRestore()
    scoped = scoped if scoped is not None else ScopedRestore()
    if (how.delete or how.dry_run) and not scope.is_full:
        raise UsageError("--delete and --dry-run restore whole points: no --scope")
    if lacks_file is not None and scope.kind is not ScopeKind.USER:
        raise UsageError("--lacks-file goes with --scope user")
    bound = bind_point(point, scope)
    scoped.notice = bound.notice
    includes = [point_path(include) for include in includes or []]
    for include in includes:
        find_node(repo, bytes.fromhex(point.tree), include)  # PathNotFound before any write
    if scope.kind is ScopeKind.USER:
        selection = Selection(includes or [])
        scoped.lacks = [p for p in lacking_paths(repo, point) if selection.covers(p)]
        scoped.lacks_file = lacks_file or default_lacks_file(target)
        check_lacks_file(repo, point, target, scoped.lacks_file)
    job = FileRestore(
        repo,
        bytes.fromhex(point.tree),
        target,
        includes=includes,
        progress=progress,
        cancel=cancel,
        scope=bound.scope,
        workers=resolve_jobs(jobs),
        overwrite=how.overwrite,
        delete=how.delete,
        dry_run=how.dry_run,
        file_report=how.file_report,
        totals=restore_totals(repo, point, includes) if scope.is_full else None,
    )
    summary = job.run()
    if scoped.lacks is not None and scoped.lacks_file is not None:
        write_lacks_file(scoped.lacks_file, scoped.lacks)
    return summary


@dataclass
class HowToRestore:
    """What a files restore does with what is already in the target (restic 0.17's
    --overwrite modes, --delete, --dry-run) and who hears of each path."""

    overwrite: str = "always"  # pipeline.restore.OVERWRITE_MODES
    delete: bool = False
    dry_run: bool = False
    file_report: FileReport | None = None

    @property
    def is_default(self) -> bool:
        return self.overwrite == "always" and not self.delete and not self.dry_run


# Counting the files below an --include walks its trees once more: up to this many
# entries, then the progress shows no totals (a bar with no end beats a long wait).
_COUNT_AT_MOST = 1_000_000


def restore_totals(
    repo: ChunkReader, point: RecoveryPoint, includes: list[str]
) -> tuple[int, int] | None:
    """(files, bytes) a restore goes through, for its progress: the point's
    recorded summary for the whole point, the included subtrees' trees otherwise.
    None when unknown (an old or odd summary, a very large subtree)."""
    if not includes:
        files, size = point.summary.get("total_files"), point.summary.get("total_bytes")
        if isinstance(files, int) and isinstance(size, int) and files >= 0 and size >= 0:
            return files, size
        return None
    count = total = seen = 0
    tree = bytes.fromhex(point.tree)
    for include in includes:
        _, node = find_node(repo, tree, include)
        if node is not None and node.type == FILE:
            count, total = count + 1, total + node.size
            continue
        if node is not None and (node.type != DIR or node.subtree is None):
            continue
        for _, sub in iter_tree(repo, node.subtree if node and node.subtree else tree):
            seen += 1
            if seen > _COUNT_AT_MOST:
                return None
            if sub.type == FILE:
                count, total = count + 1, total + sub.size
    return count, total


def point_path(text: str) -> str:
    """An `--include` as the point names its paths: absolute, with no empty,
    `.` or `..` components (`/a//b/./c` is `/a/b/c`); a relative path or one
    with `..` is a usage error (it used to match nothing, silently)."""
    if not text.startswith("/"):
        raise UsageError(f"--include {printable(text)}: give the path as the point has it, from /")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"--include {printable(text)}: a path of the point has no '..'")
    return "/" + "/".join(parts)


@dataclass
class RestoreRequest:
    point: str  # an id prefix or "latest"
    target: str
    include: list[str] = field(default_factory=list)  # paths of the point (or in the image)
    fmt: str = "raw"  # image points: the restored file's format
    partition: int | None = None  # image points with `include`: None means auto
    vm: str | None = None  # `point` is one of this VM's points
    disks: list[str] = field(default_factory=list)  # VM points: only these disks
    scope: ScopeSpec = FULL  # which part (docs/seeds.md, "Scoped recovery", "Images")
    lacks_file: str | None = None  # --scope user: where the lacking seed files are listed
    backing: str | None = None  # image points, --scope user: the golden image under the overlay
    verify_backing: bool = False  # check every block of `backing`, not a sample
    jobs: int | None = None  # files points: workers (None: cpu.default_jobs(); 1: this thread)
    how: HowToRestore = field(default_factory=HowToRestore)  # files points: --overwrite, ...


@dataclass
class FilesRestored:
    point: RecoveryPoint
    summary: RestoreSummary
    scoped: ScopedRestore = field(default_factory=ScopedRestore)


@dataclass
class ImageRestored:
    point: RecoveryPoint
    summary: ImageRestoreSummary
    backing: str | None = None  # an overlay on this golden image (--scope user)


@dataclass
class ImageFilesRestored:
    point: RecoveryPoint
    filesystem: str  # the file system's kind, e.g. "ext4"
    paths: list[str]
    bytes_written: int


@dataclass
class VmRestored:
    point: RecoveryPoint
    disks: list[tuple[str, str, ImageRestoreSummary]]  # (disk, where, summary)


Restored = FilesRestored | ImageRestored | ImageFilesRestored | VmRestored


def restore_point(
    repo: Repository,
    req: RestoreRequest,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> Restored:
    """Find the point and restore it as its kind asks: a files point into the
    directory `target`; a block point into the image `target` (or, with
    `include`, those paths of the file system inside it into the directory
    `target`); a VM point's disks into the folder `target` (or one disk into
    `target` itself)."""
    vm = vm_path(req.vm) if req.vm else None
    p = find_point(repo, req.point, PointFilter(paths=[vm]) if vm else None)
    if vm and p.paths != [vm]:
        raise UsageError(f"point {p.short_id} is not a point of VM {req.vm}")
    if p.kind in (PointKind.VM, PointKind.BLOCK) and not req.how.is_default:
        raise UsageError(
            f"--overwrite, --delete and --dry-run go with files points; {p.short_id} is an image"
        )
    if p.kind == PointKind.VM and not req.scope.is_full:
        raise UsageError(f"--scope {req.scope}: point {p.short_id} is a VM point (scopes: full)")
    if p.kind in (PointKind.VM, PointKind.BLOCK) and req.lacks_file is not None:
        raise UsageError(f"--lacks-file: point {p.short_id} is an image point")
    if p.kind == PointKind.VM:
        if req.include or req.partition is not None:
            raise UsageError("--include/--partition browse an image: restore a --disk first")
        done = restore_vm(repo, p, req.target, req.fmt, req.disks or None, progress, cancel)
        return VmRestored(p, done)
    if req.vm or req.disks:
        raise UsageError(f"point {p.short_id} is a {printable(p.kind)} point, not a VM point")
    if p.kind == PointKind.BLOCK:
        if not req.scope.is_full or req.backing:
            return restore_image_scoped(repo, repo, p, req, progress, cancel)
        if not req.include:
            return ImageRestored(p, restore_image(repo, p, req.target, req.fmt, progress, cancel))
        paths = [point_path(path) for path in req.include]
        with open_image_filesystem(repo, p, req.partition) as fs:
            total = sum(extract_with_full_path(fs, path, req.target) for path in paths)
        return ImageFilesRestored(p, fs.kind, paths, total)
    require_files(p)
    if req.backing or req.verify_backing:
        raise UsageError("--backing goes with image points (--scope user of a disk image)")
    scoped = ScopedRestore()
    summary = restore_files(
        repo,
        p,
        req.target,
        req.include,
        progress,
        cancel,
        req.scope,
        req.lacks_file,
        scoped,
        req.jobs,
        req.how,
    )
    return FilesRestored(p, summary, scoped)


def restore_image_scoped(
    repo: ChunkStore,
    seeds: SeedRepository,
    p: RecoveryPoint,
    req: RestoreRequest,
    progress: ProgressCallback,
    cancel: threading.Event | None,
) -> ImageRestored:
    """`--scope user` of an image point: only its own blocks, as a qcow2
    overlay on the golden image (--backing) of the seed it builds on (read
    from `seeds`: the repository, or the server's as an agent reads them)."""
    if req.scope.kind not in (ScopeKind.USER, ScopeKind.FULL):
        raise UsageError(f"point {p.short_id} is a disk image: its scopes are user and full")
    if req.scope.kind is not ScopeKind.USER:
        raise UsageError("--backing goes with --scope user (the point's own blocks on GOLDEN)")
    if req.include or req.partition is not None:
        raise UsageError("--scope user of an image point writes an overlay: drop --include")
    if not req.backing:
        raise UsageError(
            f"--scope user of image point {p.short_id} writes only its own blocks on top of"
            " its seed's golden image: give --backing GOLDEN (and --format qcow2)"
        )
    if req.fmt != "qcow2":
        raise UsageError("--scope user writes a qcow2 overlay on --backing: add --format qcow2")
    summary = restore_overlay(
        repo,
        p,
        req.backing,
        req.target,
        seeds=seeds,
        verify_full=req.verify_backing,
        progress=progress,
        cancel=cancel,
    )
    return ImageRestored(p, summary, req.backing)
