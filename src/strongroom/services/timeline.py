"""A protected source's timeline: its points in time order, and the point
in force at an instant (`restore SOURCE --at`).

Points belong to a source by protect/source_points.py's rule (the `protect`
tag and the summary's `protect.name`), whatever their kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from strongroom.errors import PointNotFound, UsageError
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.protect.source_points import point_consistency, source_points
from strongroom.repository.repo import Repository
from strongroom.services.points import list_points


@dataclass
class TimelineEntry:
    point: RecoveryPoint
    consistency: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.point.id,
            **self.point.to_doc(),
            "consistency": self.consistency,
            "reason": self.reason,
        }


def timeline(repo: Repository, source: str) -> list[TimelineEntry]:
    """The points of `source`, oldest first, each with its consistency."""
    return [
        TimelineEntry(p, *point_consistency(p))
        for p in source_points(list_points(repo, on_damaged=lambda *_: None), source)
    ]


def parse_instant(text: str) -> datetime:
    """`2026-11-25 14:05` (local time), `2026-11-25T14:05:30+01:00`, `...Z`."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--at {printable(text)}: not a time (examples: '2026-11-25 14:05', "
            "'2026-11-25T14:05:00+01:00')"
        ) from None
    try:
        return when.astimezone() if when.tzinfo is None else when
    except (OverflowError, OSError, ValueError):
        raise UsageError(f"--at {printable(text)}: out of range") from None


def point_at(repo: Repository, source: str, instant: datetime) -> RecoveryPoint:
    """The latest point of `source` taken at or before `instant`."""
    points = source_points(list_points(repo), source)
    if not points:
        raise PointNotFound(f"no recovery point of protected source {printable(source)}")
    earlier = [p for p in points if p.time <= instant]
    if not earlier:
        first = points[0].time.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
        raise PointNotFound(
            f"{printable(source)} has no point at or before "
            f"{instant.astimezone().strftime('%Y-%m-%d %H:%M:%S %z')}: its first is at {first}"
        )
    return earlier[-1]
