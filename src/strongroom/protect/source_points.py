"""Which points belong to a protected source, and how consistent each one is.

The rule every cycle that writes points follows (docs/protect.md, "Status
and the timeline"): a point of protected source NAME carries the tag
`protect` and a summary field `protect`, a map whose `name` is NAME. That is
what today's VHD backup mode already writes into a repository (its record
has `name`, `cycle`, `uuid`, ...). Its consistency is the point's own
`consistency` field (docs/format.md §11): `application-consistent` when
every hook and the freeze succeeded, else `crash-consistent`; continuous
protection adds `reason` to the `protect` map: why the point is only
crash-consistent (one line; absent or empty for an application-consistent
point). A crash-consistent point without a reason reads "not recorded". Grouping by this field, not
by paths or host, lets one source's points be trees, images or VM points,
and lets a VM source move between the hosts of a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from strongroom.model.point import RecoveryPoint

PROTECT_TAG = "protect"
_MAX_REASON = 300  # the summary is read from storage: a printed reason stays one short line


class Consistency(StrEnum):
    """The values of a point's `consistency` field."""

    APPLICATION = "application-consistent"
    CRASH = "crash-consistent"


def protect_summary(name: str, reason: str = "", **extra: Any) -> dict[str, Any]:
    """The `protect` summary field of a point of source `name` (plus the
    cycle's own fields in `extra`), for the code that records the point; the
    point's `consistency` goes to `record_point(consistency=...)`."""
    return {**extra, "name": name, "reason": reason}


def point_source(point: RecoveryPoint) -> str | None:
    """The protected source `point` belongs to, or None."""
    if PROTECT_TAG not in point.tags:
        return None
    record = point.summary.get("protect")
    name = record.get("name") if isinstance(record, dict) else None
    return name if isinstance(name, str) and name else None


def point_consistency(point: RecoveryPoint) -> tuple[Consistency, str]:
    """(consistency, reason) as the point records them; crash-consistent when unsure."""
    if point.consistency == Consistency.APPLICATION:
        return Consistency.APPLICATION, ""
    record = point.summary.get("protect")
    reason = record.get("reason") if isinstance(record, dict) else None
    if isinstance(reason, str) and reason.strip():
        return Consistency.CRASH, " ".join(reason.split())[:_MAX_REASON]
    return Consistency.CRASH, "not recorded"


def source_points(points: Iterable[RecoveryPoint], name: str) -> list[RecoveryPoint]:
    """The points of source `name`, oldest first (ties by id: a stable order)."""
    mine = [p for p in points if point_source(p) == name]
    return sorted(mine, key=lambda p: (p.time, p.id))
