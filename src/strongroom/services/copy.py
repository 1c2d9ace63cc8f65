"""`strongroom copy`: points from one repository into another, as restic's `copy`.

Which points: those named (ids, `latest`) or, with none named, every point
matching the filter. A point already in the target is skipped: a target point
is the same point when kind, time, host, user, paths and tags are equal and it
has the same origin (its `original`, or its id when it has none: a copy records
the source point's `original`, or the source id, so the copy of a copy and a
copy back are recognised too). That makes `copy` idempotent, and a retagged
source point (new tags) is copied again, as restic does.

The copy keeps every field of the source document (fields this version does not
know included) but its `tree` (the target's manifest), its `parent` (the
target's copy of the parent if there is one, else none: `parent` is a hint) and
adds `copied_from` {repository: the source's config id, point: the source id}.

Kinds: `files`, `block` and `vm` points are copied (pipeline/copy_tree.py).
Points made against seeds (their seeds are not in the target), points of
continuous protection (their cycle state belongs to the source repository's
protection) and kinds this version does not know are refused, one line each, and
the others still copied: the command then ends with exit code 3.

Consistency: each point's data, trees and index are flushed to the target before
the point object is written (the backup's write order, under the target's shared
lock, so a prune cannot remove what it relies on); an interrupted copy leaves the
points already copied and indexed data the next run reuses, nothing dangling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import IntegrityError, ObjectNotFound, StrongroomError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.copy_tree import SeedBased, Translator
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.points import PointFilter, find_point, list_points, load_point
from strongroom.types import Progress, ProgressCallback, no_progress

COPIED_FROM = "copied_from"


@dataclass
class CopiedPoint:
    source_id: str
    target_id: str  # "" when skipped, refused or in a dry run
    status: str  # copied, would-copy, skipped (already present), refused
    kind: str
    host: str
    time: str
    paths: list[str]
    reason: str = ""  # why refused


@dataclass
class CopySummary:
    points: list[CopiedPoint] = field(default_factory=list)
    bytes_read: int = 0  # plaintext read from the source
    files_reused: int = 0  # file contents not read again (translated earlier this run)
    data_added: int = 0  # raw bytes of chunks added at the target (trees included)
    data_added_stored: int = 0
    chunks_added: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    same_keys: bool = False  # the fast path: chunks copied by id, nothing re-cut

    def count(self, status: str) -> int:
        return sum(1 for p in self.points if p.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "points_copied": self.count("copied"),
            "points_would_copy": self.count("would-copy"),
            "points_skipped": self.count("skipped"),
            "points_refused": self.count("refused"),
            "bytes_read": self.bytes_read,
            "files_reused": self.files_reused,
            "data_added": self.data_added,
            "data_added_stored": self.data_added_stored,
            "chunks_added": self.chunks_added,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "same_keys": self.same_keys,
            "points": [
                {
                    "source_id": p.source_id,
                    "target_id": p.target_id or None,
                    "status": p.status,
                    "kind": p.kind,
                    "host": p.host,
                    "time": p.time,
                    "paths": p.paths,
                    **({"reason": p.reason} if p.reason else {}),
                }
                for p in self.points
            ],
        }


def origin_of(point: RecoveryPoint, doc: dict[str, Any]) -> str:
    """The point a copy stems from: its `original` (a copy's, a retagged
    point's; a copy through a server keeps it in its summary, the server
    storing only the fields it knows), else its own id."""
    for holder in (doc, point.summary):
        original = holder.get("original")
        if isinstance(original, str) and original:
            return original
    return point.id


def copied_source(doc: dict[str, Any]) -> str | None:
    """The source point id a copy names in `copied_from` (top level, or in
    the summary of a copy through a server), None if it is no copy."""
    for holder in (doc, doc.get("summary")):
        origin = holder.get(COPIED_FROM) if isinstance(holder, dict) else None
        if isinstance(origin, dict) and isinstance(origin.get("point"), str):
            return str(origin["point"])
    return None


def _identity(point: RecoveryPoint, doc: dict[str, Any], host: str | None) -> tuple[object, ...]:
    """What makes two points in two repositories the same point (see the
    module); `host`: the host the copy gets (through a server, the machine)."""
    return (
        str(point.kind),
        point.time,
        host or point.host,
        point.user,
        tuple(sorted(point.paths)),
        tuple(point.tags),
        origin_of(point, doc),
    )


@dataclass
class Listed:
    """One side of a copy as it sees it: points (oldest first), their stored
    documents by id, and `load`, which finds a point not listed (a parent
    outside the selection) or answers None."""

    points: list[RecoveryPoint]
    docs: dict[str, dict[str, Any]]
    load: Callable[[str], RecoveryPoint | None]


def listed_in(repo: Repository, points: list[RecoveryPoint]) -> Listed:
    """`points` of a local repository with their documents."""

    def load(point_id: str) -> RecoveryPoint | None:
        try:
            return load_point(repo, point_id)
        except (StrongroomError, ObjectNotFound):
            return None  # damaged or forgotten: simply not used

    return Listed(points, _documents(repo, points), load)


@dataclass(frozen=True)
class Marks:
    """How the copies are written: `host` set on each (through a server: the
    machine's name, which the server requires), and where the copy marks
    go: top level (a local repository keeps every field) or in the summary
    (a server stores the fields its codec knows, the summary whole)."""

    host: str | None = None
    in_summary: bool = False


def _documents(repo: Repository, points: list[RecoveryPoint]) -> dict[str, dict[str, Any]]:
    """Each point's stored document (read in parallel; cached on remote storage)."""

    def read(point: RecoveryPoint) -> tuple[str, dict[str, Any] | None]:
        try:
            return point.id, repo.load_point(point.id)
        except (ObjectNotFound, IntegrityError):
            return point.id, None  # forgotten or damaged since listed

    workers = max(1, min(repo.backend.capabilities.parallel_requests, len(points) or 1))
    with ThreadPoolExecutor(workers) as pool:
        return {pid: doc for pid, doc in pool.map(read, points) if doc is not None}


def refusal(point: RecoveryPoint, doc: dict[str, Any]) -> str | None:
    """Why this point is not copied, or None."""
    if point.kind not in (PointKind.FILES, PointKind.BLOCK, PointKind.VM):
        return f"of kind {printable(str(point.kind))}, which this strongroom cannot read"
    if point.seeds is not None or "seeds" in doc:
        return "seed-based (its seeds are not in the target)"
    if "protect" in point.summary:
        return "a point of continuous protection (its cycle state stays with the source)"
    return None


def logical_size(point: RecoveryPoint) -> int | None:
    """The bytes a point holds (a file tree's files, a disk's or VM's virtual
    size), from its summary, for the progress's total; None if it does not say."""
    summary = point.summary
    if point.kind in (PointKind.FILES, PointKind.BLOCK):
        size = summary.get("total_bytes" if point.kind == PointKind.FILES else "size")
        return size if type(size) is int else None
    disks = summary.get("disks", [])
    sizes: list[int] = [
        d["size"] for d in disks if isinstance(d, dict) and type(d.get("size")) is int
    ]
    return sum(sizes) if disks and len(sizes) == len(disks) else None


def select_points(src: Repository, refs: list[str], flt: PointFilter) -> list[RecoveryPoint]:
    """The source points to copy, oldest first (parents before children)."""
    if refs:
        found = {p.id: p for p in (find_point(src, r, flt) for r in refs)}
        return sorted(found.values(), key=lambda p: (p.time, p.id))
    return list_points(src, flt)


def copy_points(
    src: Repository,
    dst: Repository,
    refs: list[str],
    flt: PointFilter,
    *,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    on_point: Callable[[CopiedPoint], None] = lambda _: None,
) -> CopySummary:
    """Copy the selected points of `src` into `dst` (see the module)."""
    clock = time.monotonic()
    wanted = listed_in(src, select_points(src, refs, flt))
    present = listed_in(dst, list_points(dst))
    return copy_listed(
        src, wanted, dst, present, Marks(), refusal,
        dry_run=dry_run, progress=progress, on_point=on_point, clock=clock,
    )  # fmt: skip


def copy_listed(
    src: ChunkStore,
    wanted: Listed,
    dst: ChunkStore,
    present: Listed,
    marks: Marks,
    refuse: Callable[[RecoveryPoint, dict[str, Any]], str | None],
    *,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    on_point: Callable[[CopiedPoint], None] = lambda _: None,
    clock: float | None = None,
) -> CopySummary:
    """Copy `wanted` of `src` into `dst`, which holds `present` (the module's
    rules; `refuse` says why a point is not copied, None to copy it): the
    core of `copy_points` and of the copies through a backup server
    (services/agent_copy.py)."""
    clock = time.monotonic() if clock is None else clock
    identities = {
        _identity(p, present.docs[p.id], None): p.id for p in present.points if p.id in present.docs
    }
    copied_ids: dict[str, str] = {}  # source id -> target id, for parents
    for p in present.points:
        origin = copied_source(present.docs.get(p.id, {}))
        if origin is not None:
            copied_ids[origin] = p.id
    summary = CopySummary(dry_run=dry_run)
    todo: list[tuple[RecoveryPoint, dict[str, Any], CopiedPoint]] = []
    for point in wanted.points:
        doc = wanted.docs.get(point.id)
        record = CopiedPoint(
            point.id, "", "", str(point.kind), point.host, point.time.isoformat(), point.paths
        )
        summary.points.append(record)
        if doc is None:
            record.status, record.reason = "refused", "damaged or removed while copying"
        elif (found := identities.get(_identity(point, doc, marks.host))) is not None:
            record.status, record.target_id = "skipped", found
            copied_ids.setdefault(point.id, found)
        elif (why := refuse(point, doc)) is not None:
            record.status, record.reason = "refused", why
        elif dry_run:
            record.status = "would-copy"
        else:
            todo.append((point, doc, record))
            continue
        on_point(record)
    sizes = [logical_size(point) for point, _, _ in todo]
    known = [size for size in sizes if size is not None]
    state = Progress(job="copy", bytes_total=sum(known) if len(known) == len(sizes) else None)
    translator = Translator(src, dst, state, progress) if todo else None
    sides = _Sides(src, wanted, dst, present, marks)
    try:
        for point, doc, record in todo:
            assert translator is not None
            try:
                record.target_id = _copy_one(translator, sides, point, doc, copied_ids)
            except SeedBased as err:
                translator.forget()  # what it mapped may have been dropped unstored
                record.status, record.reason = "refused", f"seed-based ({err})"
            except StrongroomError as err:  # one line that names the point
                err.args = (f"copying point {point.short_id}: {err}", *err.args[1:])
                raise
            else:
                record.status = "copied"
                copied_ids[point.id] = record.target_id
            on_point(record)
    finally:
        if translator is not None:
            translator.close()
            summary.bytes_read = translator.counts.bytes_read
            summary.files_reused = translator.counts.files_reused
            summary.same_keys = translator.same_keys
    stats = dst.stats
    summary.data_added = stats.bytes_added_raw
    summary.data_added_stored = stats.bytes_added_stored
    summary.chunks_added = stats.chunks_added
    summary.seconds = time.monotonic() - clock
    return summary


@dataclass(frozen=True)
class _Sides:
    src: ChunkStore
    wanted: Listed
    dst: ChunkStore
    present: Listed
    marks: Marks


def _copy_one(
    translator: Translator,
    sides: _Sides,
    point: RecoveryPoint,
    doc: dict[str, Any],
    copied_ids: dict[str, str],
) -> str:
    """Translate one point's manifest, flush, then write its document; the target id.
    A parent copied in an earlier run is learnt first (`Translator.learn`), so
    only what changed since is read from the source."""
    dst = sides.dst
    root = bytes.fromhex(point.tree)
    copy_of_parent = copied_ids.get(point.parent) if point.parent else None
    if point.parent and copy_of_parent:
        _learn_parent(translator, sides, point, point.parent, copy_of_parent)
    try:
        if point.kind == PointKind.FILES:
            tree = translator.file_tree(root)
        elif point.kind == PointKind.BLOCK:
            tree = translator.block_map(root)
        else:
            tree = translator.vm_manifest(root)
        dst.flush()
    except BaseException:
        dst.abandon()  # what was stored is indexed: the next run reuses it
        raise
    new = {k: v for k, v in doc.items() if k != "id"}
    new["tree"] = tree.hex()
    new["parent"] = copied_ids.get(point.parent) if point.parent else None
    marks = {
        "original": origin_of(point, doc),
        COPIED_FROM: {"repository": sides.src.config.id, "point": point.id},
    }
    summary = {k: v for k, v in dict(new.get("summary") or {}).items() if k not in marks}
    if sides.marks.host is not None:
        new["host"] = sides.marks.host
    if sides.marks.in_summary:
        summary.update(marks)
    else:
        new.update(marks)
    new["summary"] = summary
    return dst.save_point(new)


def _learn_parent(
    translator: Translator,
    sides: _Sides,
    point: RecoveryPoint,
    parent_id: str,
    copy_id: str,
) -> None:
    """Hand the translator the parent's manifest and its copy's, when both load
    and are of the point's kind (a damaged or forgotten one is simply skipped)."""
    parent, copy = sides.wanted.load(parent_id), sides.present.load(copy_id)
    if parent is None or copy is None:
        return
    if parent.kind == copy.kind == point.kind:
        translator.learn(str(point.kind), bytes.fromhex(parent.tree), bytes.fromhex(copy.tree))
