"""Retention of a protected source's points: decide, then forget the rest.

A policy's `Retention` becomes forget's `KeepPolicy` (keep_last -> last,
keep_within -> within, hourly/daily/weekly alike) and forget's
`apply_policy` decides over ONE source's points (protect/source_points.py:
the `protect` tag and the summary's `protect.name`), so `strongroom forget`
and protection thin alike. Two rules are added:

- the source's newest point is always kept: the next cycle's parent, and
  the only recent point if a rule were to keep none;
- at most `MAX_POINTS` (448) points of a source are kept. When the rules keep
  more, the oldest points that only `keep_last`/`keep_within` keep go
  first (the thinning rules' one-per-hour/day/week points carry the long
  history), then the oldest of the rest.

The cycle calls `apply_retention` after it committed its point, with the
repository it holds (a SHARED lock, as `forget` takes). Only point objects
are removed; `prune` reclaims the data they alone used.
"""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.model.point import RecoveryPoint
from strongroom.protect.policy import MAX_POINTS, Retention
from strongroom.protect.source_points import source_points
from strongroom.repository.repo import Repository
from strongroom.services.forget import Decision, KeepPolicy, apply_policy, forget_points
from strongroom.services.points import list_points

_RECENT_ONLY = frozenset({"last", "within"})


def keep_policy(retention: Retention) -> KeepPolicy:
    return KeepPolicy(
        last=retention.keep_last,
        hourly=retention.hourly,
        daily=retention.daily,
        weekly=retention.weekly,
        within=retention.keep_within,
    )


def decide(
    points: list[RecoveryPoint], retention: Retention, cap: int = MAX_POINTS
) -> list[Decision]:
    """Which of ONE source's `points` stay; newest first. Pure: no repository."""
    decisions = apply_policy(points, keep_policy(retention))
    if not decisions:
        return decisions
    newest = decisions[0]
    if not newest.keep:
        newest.keep, newest.reasons = True, ["newest"]
    kept = [d for d in decisions if d.keep]
    excess = len(kept) - cap
    if excess > 0:
        oldest_first = kept[:0:-1]  # the newest point never goes
        recent_only = [d for d in oldest_first if set(d.reasons) <= _RECENT_ONLY]
        others = [d for d in oldest_first if not set(d.reasons) <= _RECENT_ONLY]
        for d in (recent_only + others)[:excess]:
            d.keep, d.reasons = False, [f"over the {cap}-point cap"]
    return decisions


@dataclass
class RetentionResult:
    source: str
    kept: list[str]  # point ids, newest first
    forgotten: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "kept": self.kept, "forgotten": self.forgotten}


def apply_retention(
    repo: Repository, source: str, retention: Retention, *, dry_run: bool = False
) -> RetentionResult:
    """Decide over the points of `source` in `repo` and forget those not kept.

    Points of other sources are never touched; a damaged point is skipped
    (it cannot be told apart: `forget ID` removes it by hand)."""
    points = source_points(list_points(repo, on_damaged=lambda *_: None), source)
    decisions = decide(points, retention)
    forgotten = forget_points(repo, decisions, dry_run=dry_run)
    kept = [d.point.id for d in decisions if d.keep]
    return RetentionResult(source, kept, forgotten)
