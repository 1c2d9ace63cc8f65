"""Retention: which points a keep-policy keeps, and forgetting the rest.

Semantics follow restic's `forget`: points are grouped (by host and paths by
default); within a group, newest first, each keep-rule keeps the newest point
of each of its last N buckets (hours, days, ISO weeks, months, years); a
point is kept if any rule keeps it. `within` (seconds) keeps every point
taken within that long of the group's newest point, as restic's
`--keep-within` (a series that stopped keeps its history).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services.points import resolve_point_id


@dataclass
class KeepPolicy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    tags: list[str] = field(default_factory=list)  # points with any of these tags are kept
    within: float = 0.0  # seconds back from the group's newest point

    def empty(self) -> bool:
        return not any(
            (
                self.last,
                self.hourly,
                self.daily,
                self.weekly,
                self.monthly,
                self.yearly,
                self.tags,
                self.within,
            )
        )


_BUCKETS: dict[str, Callable[[datetime], object]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


@dataclass
class Decision:
    point: RecoveryPoint
    keep: bool
    reasons: list[str]


def apply_policy(points: list[RecoveryPoint], policy: KeepPolicy) -> list[Decision]:
    """Decide for one group of points (any order); returns newest first."""
    ordered = sorted(points, key=lambda p: p.time, reverse=True)
    reasons: dict[str, list[str]] = defaultdict(list)
    since = _since(ordered[0].time, policy.within) if ordered else None
    for i, point in enumerate(ordered):
        if i < policy.last:
            reasons[point.id].append("last")
        if policy.within and since is not None and point.time >= since:
            reasons[point.id].append("within")
        if policy.tags and set(policy.tags) & set(point.tags):
            reasons[point.id].append("tag")
    for rule, bucket_of in _BUCKETS.items():
        budget = getattr(policy, rule)
        seen: set[object] = set()
        for point in ordered:
            if len(seen) >= budget:
                break
            bucket = bucket_of(point.time.astimezone())
            if bucket not in seen:
                seen.add(bucket)
                reasons[point.id].append(rule)
    return [Decision(p, bool(reasons[p.id]), reasons[p.id]) for p in ordered]


def _since(newest: datetime, seconds: float) -> datetime:
    try:
        return newest - timedelta(seconds=seconds)
    except OverflowError:  # before year 1: every point is within
        return datetime.min.replace(tzinfo=newest.tzinfo)


def group_points(points: list[RecoveryPoint], group_by: str) -> dict[str, list[RecoveryPoint]]:
    """Group by a comma list of host, paths, tags (empty: one group), keyed by a
    printable label (`host=H paths=A:B`).

    A VM's points form one series whichever host of the cluster took them:
    their host is not part of the key. Grouping compares the values themselves,
    not their label: the points of paths `/a:b` and of paths `/a` and `b` (or a
    host holding ` paths=`) are different series, even where labels look alike."""
    keys = [k for k in group_by.split(",") if k]
    series: dict[tuple[Any, ...], list[RecoveryPoint]] = defaultdict(list)
    for p in points:
        parts: list[tuple[str, Any]] = []
        for k in keys:
            if k == "host" and p.kind != PointKind.VM:
                parts.append(("host", p.host))
            elif k == "paths":
                parts.append(("paths", tuple(sorted(p.paths))))
            elif k == "tags":
                parts.append(("tags", tuple(sorted(p.tags))))
        series[tuple(parts)].append(p)
    groups: dict[str, list[RecoveryPoint]] = {}
    for key, members in series.items():
        label = " ".join(_label_part(k, v) for k, v in key)
        shown, n = label, 1
        while shown in groups:  # labels alike, series apart
            n += 1
            shown = f"{label} #{n}"
        groups[shown] = members
    return groups


def _label_part(name: str, value: str | tuple[str, ...]) -> str:
    if isinstance(value, str):
        return f"{name}={printable(value)}"
    return f"{name}=" + (":" if name == "paths" else ",").join(printable(v) for v in value)


def forget_points(repo: Repository, decisions: list[Decision], dry_run: bool = False) -> list[str]:
    """Delete the point objects of every decision that does not keep; returns their ids."""
    removed = []
    for d in decisions:
        if not d.keep:
            if not dry_run:
                repo.delete_point(d.point.id)
            removed.append(d.point.id)
    return removed


def forget_by_id(
    repo: Repository,
    refs: list[str],
    dry_run: bool = False,
    report: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Forget the points named by id prefixes, without reading them (a damaged
    point can be named and forgotten). Every prefix is resolved before anything
    is removed; `report` hears each full id as it goes. Returns the full ids."""
    doomed = [resolve_point_id(repo, ref) for ref in refs]
    for point_hex in doomed:
        if not dry_run:
            repo.delete_point(point_hex)
        report(point_hex)
    return doomed
