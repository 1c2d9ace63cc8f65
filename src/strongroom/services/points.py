"""Finding recovery points: by id prefix, `latest`, or filters (host, tag, path)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from strongroom.errors import (
    IntegrityError,
    ObjectNotFound,
    PointNotFound,
    StrongroomError,
    UnsupportedVersion,
    UsageError,
)
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.repository.format import point_name as repo_point_name
from strongroom.repository.repo import Repository, is_object_hex


@dataclass
class PointFilter:
    hosts: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def matches(self, point: RecoveryPoint) -> bool:
        if self.hosts and point.host not in self.hosts:
            return False
        if self.tags and not set(self.tags) <= set(point.tags):
            return False
        return not self.paths or sorted(self.paths) == sorted(point.paths)


def require_files(point: RecoveryPoint) -> None:
    """Refuse to read `point` as a file tree unless it is one: a kind this
    version does not know (docs/format.md §11) must never be walked as files."""
    if point.kind != PointKind.FILES:
        raise UsageError(
            f"point {point.short_id} is of kind {printable(point.kind)}, "
            "which this strongroom cannot read"
        )


def load_point(repo: Repository, point_hex: str) -> RecoveryPoint:
    """One point by full id; IntegrityError (naming it) if damaged or malformed."""
    doc = repo.load_point(point_hex)
    try:
        point = RecoveryPoint.from_doc(doc)
    except UnsupportedVersion as err:
        raise IntegrityError(f"point {point_hex[:16]}: {err}") from None
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
        raise IntegrityError(f"point {point_hex[:16]} is malformed: {err!r}") from None
    if not is_object_hex(point.tree):
        raise IntegrityError(f"point {point_hex[:16]} is malformed: its root is not an id")
    return point


def list_points(
    repo: Repository,
    flt: PointFilter | None = None,
    on_damaged: Callable[[str, StrongroomError], None] | None = None,
    *,
    strict: bool = False,
    known: Mapping[str, RecoveryPoint] | None = None,
) -> list[RecoveryPoint]:
    """All points matching `flt`, oldest first. `known`: points read before, by
    id (a point object never changes under its id), so that listing again reads
    only the new ones.

    An unreadable point object is reported (once, by name) to `repo.damage`, or
    to `on_damaged` if given, and skipped: one damaged point must not block
    listing, restoring another point or a backup. With `strict` it raises
    instead, naming the point and the way out (prune must know every point).
    """

    def read(point_hex: str) -> RecoveryPoint | IntegrityError | None:
        if known is not None and point_hex in known:
            return known[point_hex]
        try:
            return load_point(repo, point_hex)
        except ObjectNotFound:
            return None  # forgotten meanwhile
        except IntegrityError as err:
            return err

    # In parallel as the backend allows (one GET per point: on S3 10,000
    # points are minutes one at a time); reported in id order as before.
    ids = repo.list_point_ids()
    workers = max(1, min(repo.backend.capabilities.parallel_requests, len(ids)))
    with ThreadPoolExecutor(workers) as pool:
        loaded = list(pool.map(read, ids))
    points = []
    for point_hex, found in zip(ids, loaded, strict=True):
        if isinstance(found, RecoveryPoint):
            points.append(found)
        elif isinstance(found, IntegrityError):
            if strict:
                raise IntegrityError(
                    f"{found}: cannot tell what this point uses, so nothing can be pruned; "
                    f"'strongroom forget {point_hex[:16]}' drops it"
                ) from None
            if on_damaged is not None:
                on_damaged(point_hex, found)
            else:
                repo.damage.report(repo_point_name(point_hex), str(found))
    if flt is not None:
        points = [p for p in points if flt.matches(p)]
    return sorted(points, key=lambda p: (p.time, p.id))


def resolve_point_id(repo: Repository, ref: str) -> str:
    """The full id of the one point whose id starts with `ref`, without reading it
    (so a damaged point can be named, e.g. to forget it)."""
    ref = ref.lower()
    if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
        raise UsageError(f"{ref!r} is not a point id (give at least 4 hex digits, or 'latest')")
    matches = [pid for pid in repo.list_point_ids() if pid.startswith(ref)]
    if not matches:
        raise PointNotFound(f"no recovery point with id {ref}")
    if len(matches) > 1:
        raise UsageError(f"point id {ref} is ambiguous ({len(matches)} match); give more digits")
    return matches[0]


def find_point(repo: Repository, ref: str, flt: PointFilter | None = None) -> RecoveryPoint:
    """`ref` is `latest` (newest readable point matching `flt`) or a unique prefix of a
    point id (IntegrityError if that point is damaged)."""
    if ref == "latest":
        points = list_points(repo, flt)
        if not points:
            raise PointNotFound("no recovery point matches (the repository has none yet?)")
        return points[-1]
    return load_point(repo, resolve_point_id(repo, ref))
