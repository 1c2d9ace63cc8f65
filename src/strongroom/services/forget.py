"""Retention: which points a keep-policy keeps, and forgetting the rest.

Semantics follow restic's `forget`: points are grouped (by host and paths by
default); within a group, newest first, each keep-rule keeps the newest point
of each of its last N buckets (hours, days, ISO weeks, months, years); a
point is kept if any rule keeps it. `within` (seconds) or `within_span`
(years, months, days and hours, counted on the calendar as restic's
`--keep-within 1y6m`) keeps every point taken within that long of the group's
newest point (a series that stopped keeps its history); `within_buckets`
(restic's `--keep-within-daily 7d` and its kin) keeps the newest point of each
hour/day/week/month/year bucket within that long of the newest point.
"""

from __future__ import annotations

import calendar
import re
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

_SPAN = re.compile(r"(\d+)([ymdh])")
_MAX_SPAN_PART = 1_000_000


@dataclass(frozen=True)
class Span:
    """A calendar duration as restic writes it: `1y6m`, `7d`, `36h` (m = months)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Span:
        """ValueError with a sentence if `text` is not one."""
        compact = text.strip().lower()
        parts = _SPAN.findall(compact)
        if not parts or "".join(n + u for n, u in parts) != compact:
            raise ValueError(
                f"{text!r} is not a duration: give numbers with y (years), m (months), "
                "d (days) or h (hours), e.g. 7d, 36h or 1y6m"
            )
        values = {"y": 0, "m": 0, "d": 0, "h": 0}
        for number, unit in parts:
            values[unit] += int(number)
        if max(values.values()) > _MAX_SPAN_PART:
            raise ValueError(f"{text!r} is too long a duration")
        return cls(values["y"], values["m"], values["d"], values["h"])

    def before(self, when: datetime) -> datetime:
        """`when` moved back by the span: years and months on the calendar (a day
        past the target month's end becomes its last day), then days and hours."""
        month_index = when.year * 12 + (when.month - 1) - self.years * 12 - self.months
        year, month = divmod(month_index, 12)
        if year < 1:
            return datetime.min.replace(tzinfo=when.tzinfo)
        day = min(when.day, calendar.monthrange(year, month + 1)[1])
        moved = when.replace(year=year, month=month + 1, day=day)
        try:
            return moved - timedelta(days=self.days, hours=self.hours)
        except OverflowError:
            return datetime.min.replace(tzinfo=when.tzinfo)

    def __str__(self) -> str:
        text = "".join(
            f"{n}{u}"
            for n, u in ((self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h"))
            if n
        )
        return text or "0h"


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
    within_span: Span | None = None  # the same on the calendar (forget --keep-within)
    # rule (hourly, daily, ...) -> span: one point per bucket within the span
    within_buckets: dict[str, Span] = field(default_factory=dict)

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
                self.within_span,
                self.within_buckets,
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
    newest = ordered[0].time if ordered else None
    since = _since(newest, policy.within) if newest is not None else None
    span_since = (
        policy.within_span.before(newest)
        if policy.within_span is not None and newest is not None
        else None
    )
    for i, point in enumerate(ordered):
        if i < policy.last:
            reasons[point.id].append("last")
        within_seconds = bool(policy.within) and since is not None and point.time >= since
        if within_seconds or (span_since is not None and point.time >= span_since):
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
        span = policy.within_buckets.get(rule)
        if span is not None and newest is not None:
            limit = span.before(newest)
            seen = set()
            for point in ordered:
                if point.time < limit:
                    break
                bucket = bucket_of(point.time.astimezone())
                if bucket not in seen:
                    seen.add(bucket)
                    reasons[point.id].append(f"within-{rule}")
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
