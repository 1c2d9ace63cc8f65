"""Retention of a protected source's points: the 448 cap, keep_within, the
hourly/daily/weekly thinning, and forgetting only that source's points."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from strongroom.protect.policy import MAX_POINTS, Retention
from strongroom.repository.repo import Repository
from strongroom.services.points import list_points
from strongroom.services.retention import apply_retention, decide
from tests.helpers.protected import START, every, store_points, synthetic_point

QUARTER = timedelta(minutes=15)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Days and hours are local buckets: pin the zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def kept_times(times: list[datetime], retention: Retention) -> set[datetime]:
    decisions = decide([synthetic_point("s", t) for t in times], retention)
    assert len(decisions) == len(times)
    return {d.point.time for d in decisions if d.keep}


def at(day: int, hour: int, minute: int) -> datetime:
    return START.replace(day=day, hour=hour, minute=minute)


def test_keep_last_keeps_exactly_the_newest() -> None:
    times = every(timedelta(minutes=1), 600)
    assert kept_times(times, Retention(keep_last=MAX_POINTS)) == set(times[-MAX_POINTS:])


def test_the_cap_holds_when_the_rules_keep_more() -> None:
    times = every(timedelta(minutes=1), 600)  # all within a week of the newest
    assert kept_times(times, Retention(keep_within=7 * 86400)) == set(times[-MAX_POINTS:])


def test_thinning_keeps_one_point_per_hour_day_and_week() -> None:
    times = every(QUARTER, 10 * 96)  # 2026-11-02 00:00 .. 11-11 23:45, every 15 min
    kept = kept_times(times, Retention(keep_last=4, hourly=24, daily=7, weekly=2))
    last = {at(11, 23, m) for m in (0, 15, 30, 45)}
    hourly = {at(11, h, 45) for h in range(24)}
    daily = {at(d, 23, 45) for d in range(5, 12)}
    weekly = {at(11, 23, 45), at(8, 23, 45)}  # ISO weeks 46 and 45: each one's newest
    assert kept == last | hourly | daily | weekly
    assert len(kept) == 3 + 24 + 6  # rules overlap: 11-11 23:45 is kept by all four


def test_the_cap_drops_recent_only_points_before_thinned_ones() -> None:
    times = every(QUARTER, 10 * 96)  # 240 hours: every hour's newest is an XX:45 point
    kept = kept_times(times, Retention(keep_last=MAX_POINTS, hourly=MAX_POINTS))
    hourly = {t for t in times if t.minute == 45}
    assert len(hourly) == 240
    newest_others = [t for t in times if t.minute != 45][-(MAX_POINTS - 240) :]
    assert kept == hourly | set(newest_others)
    assert len(kept) == MAX_POINTS


def test_keep_within_counts_back_from_the_newest_point() -> None:
    times = every(QUARTER, 200)
    kept = kept_times(times, Retention(keep_within=3600))  # the newest and the hour before it
    assert kept == set(times[-5:])


def test_the_newest_point_is_always_kept() -> None:
    times = every(QUARTER, 10)
    assert kept_times(times, Retention(weekly=0, keep_last=0, daily=0, hourly=0)) == {times[-1]}


def test_apply_retention_forgets_only_that_sources_points(memory_repo: Repository) -> None:
    ours = store_points(memory_repo, "db", every(timedelta(minutes=1), 470))
    theirs = store_points(memory_repo, "web", every(timedelta(minutes=1), 3))
    result = apply_retention(memory_repo, "db", Retention(keep_last=MAX_POINTS))
    assert set(result.forgotten) == {p.id for p in ours[:22]}
    assert result.kept == [p.id for p in reversed(ours[22:])]
    left = {p.id for p in list_points(memory_repo)}
    assert left == {p.id for p in ours[22:]} | {p.id for p in theirs}
    again = apply_retention(memory_repo, "db", Retention(keep_last=MAX_POINTS), dry_run=True)
    assert again.forgotten == []
