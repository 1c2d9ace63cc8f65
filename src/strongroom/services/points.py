"""Finding recovery points: by id prefix, `latest`, or filters (host, tag, path)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from strongroom.errors import (
    IntegrityError,
    ObjectNotFound,
    PointNotFound,
    StrongroomError,
    UsageError,
)
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository


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


def list_points(
    repo: Repository,
    flt: PointFilter | None = None,
    on_damaged: Callable[[str, StrongroomError], None] | None = None,
) -> list[RecoveryPoint]:
    """All points matching `flt`, oldest first.

    An unreadable point object raises, unless `on_damaged` is given: then it is
    reported there and skipped (a backup must not be blocked by one damaged
    point; listing, check and prune must not pass over it silently).
    """
    points = []
    for point_hex in repo.list_point_ids():
        try:
            points.append(RecoveryPoint.from_doc(repo.load_point(point_hex)))
        except ObjectNotFound:
            continue  # forgotten meanwhile
        except (StrongroomError, ValueError, KeyError, TypeError) as err:
            error = (
                err
                if isinstance(err, StrongroomError)
                else IntegrityError(f"point {point_hex[:16]} is malformed: {err}")
            )
            if on_damaged is None:
                raise error from None
            on_damaged(point_hex, error)
    if flt is not None:
        points = [p for p in points if flt.matches(p)]
    return sorted(points, key=lambda p: (p.time, p.id))


def find_point(repo: Repository, ref: str, flt: PointFilter | None = None) -> RecoveryPoint:
    """`ref` is `latest` (newest matching `flt`) or a unique prefix of a point id."""
    if ref == "latest":
        points = list_points(repo, flt)
        if not points:
            raise PointNotFound("no recovery point matches (the repository has none yet?)")
        return points[-1]
    ref = ref.lower()
    if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
        raise UsageError(f"{ref!r} is not a point id (give at least 4 hex digits, or 'latest')")
    matches = [pid for pid in repo.list_point_ids() if pid.startswith(ref)]
    if not matches:
        raise PointNotFound(f"no recovery point with id {ref}")
    if len(matches) > 1:
        raise UsageError(f"point id {ref} is ambiguous ({len(matches)} match); give more digits")
    return RecoveryPoint.from_doc(repo.load_point(matches[0]))
