"""Retention policies (restic's semantics) on points with chosen times."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.model.point import RecoveryPoint
from strongroom.services.forget import KeepPolicy, apply_policy, group_points


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Buckets are computed in local time: make local time UTC for these tests."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def point(
    when: str | datetime, pid: str = "", tags: tuple[str, ...] = (), host: str = "h"
) -> RecoveryPoint:
    t = datetime.fromisoformat(when) if isinstance(when, str) else when
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return RecoveryPoint(
        kind="files",
        time=t,
        host=host,
        user="u",
        paths=["/data"],
        tree="00" * 32,
        tags=list(tags),
        id=pid or t.isoformat(),
    )


def kept(points: list[RecoveryPoint], policy: KeepPolicy) -> list[str]:
    return [d.point.id for d in apply_policy(points, policy) if d.keep]


POINTS = [
    point("2026-01-01T10:00:00", "d1-10"),
    point("2026-01-01T18:00:00", "d1-18"),
    point("2026-01-02T09:00:00", "d2-09"),
    point("2026-01-04T08:00:00", "d4-08"),
    point("2026-01-04T20:00:00", "d4-20"),
    point("2026-01-05T12:00:00", "d5-12"),
]


def test_keep_last() -> None:
    assert kept(POINTS, KeepPolicy(last=2)) == ["d5-12", "d4-20"]
    assert kept(POINTS, KeepPolicy(last=100)) == [p.id for p in reversed(POINTS)]


def test_keep_daily_keeps_the_newest_of_each_recent_day_with_points() -> None:
    assert kept(POINTS, KeepPolicy(daily=3)) == ["d5-12", "d4-20", "d2-09"]
    assert kept(POINTS, KeepPolicy(daily=10)) == ["d5-12", "d4-20", "d2-09", "d1-18"]


def test_keep_hourly_weekly_monthly_yearly() -> None:
    many = [
        point("2024-06-01T00:00:00", "2024"),
        point("2025-03-01T00:00:00", "2025-03"),
        point("2025-12-30T00:00:00", "2025-12-30"),  # ISO week 1 of 2026
        point("2026-01-01T10:00:00", "jan1-10"),
        point("2026-01-01T10:30:00", "jan1-1030"),
        point("2026-01-01T11:15:00", "jan1-1115"),
        point("2026-02-10T00:00:00", "feb"),
    ]
    assert kept(many, KeepPolicy(hourly=2)) == ["feb", "jan1-1115"]
    assert kept(many, KeepPolicy(weekly=3)) == ["feb", "jan1-1115", "2025-03"]
    assert kept(many, KeepPolicy(monthly=3)) == ["feb", "jan1-1115", "2025-12-30"]
    assert kept(many, KeepPolicy(yearly=5)) == ["feb", "2025-12-30", "2024"]


def test_rules_combine_and_tags_are_kept() -> None:
    points = [*POINTS, point("2025-01-01T00:00:00", "tagged", tags=("keep", "x"))]
    decisions = apply_policy(points, KeepPolicy(last=1, daily=2, tags=["keep"]))
    reasons = {d.point.id: d.reasons for d in decisions if d.keep}
    assert reasons == {"d5-12": ["last", "daily"], "d4-20": ["daily"], "tagged": ["tag"]}
    assert [d.point.id for d in decisions] == [p.id for p in sorted(points, key=lambda p: p.time)][
        ::-1
    ]


def test_empty_policy_keeps_nothing() -> None:
    assert KeepPolicy().empty()
    assert kept(POINTS, KeepPolicy()) == []


def test_grouping_by_host_and_paths() -> None:
    a = point("2026-01-01T00:00:00", "a", host="one")
    b = point("2026-01-02T00:00:00", "b", host="two")
    c = point("2026-01-03T00:00:00", "c", host="one")
    groups = group_points([a, b, c], "host,paths")
    assert {k: [p.id for p in v] for k, v in groups.items()} == {
        "host=one paths=/data": ["a", "c"],
        "host=two paths=/data": ["b"],
    }
    assert list(group_points([a, b, c], "")) == [""]


start = datetime(2020, 1, 1, tzinfo=UTC)
times = st.lists(
    st.integers(0, 3 * 365 * 24 * 3600).map(lambda s: start + timedelta(seconds=s)),
    unique=True,
    max_size=40,
)


@given(times=times, n=st.integers(0, 10), rule=st.sampled_from(["hourly", "daily", "monthly"]))
def test_bucket_rules_match_a_reference(times: list[datetime], n: int, rule: str) -> None:
    """Each rule keeps the newest point of each of the n most recent buckets."""
    fmt = {"hourly": "%Y%m%d%H", "daily": "%Y%m%d", "monthly": "%Y%m"}[rule]
    points = [point(t) for t in times]
    newest_per_bucket: dict[str, RecoveryPoint] = {}
    for p in sorted(points, key=lambda p: p.time):
        newest_per_bucket[p.time.strftime(fmt)] = p
    recent = sorted(newest_per_bucket, reverse=True)[:n]
    expected = sorted((newest_per_bucket[b].id for b in recent), reverse=True)
    assert sorted(kept(points, KeepPolicy(**{rule: n})), reverse=True) == expected


@given(times=times, n=st.integers(0, 50))
def test_keep_last_matches_a_reference(times: list[datetime], n: int) -> None:
    points = [point(t) for t in times]
    expected = [p.id for p in sorted(points, key=lambda p: p.time, reverse=True)[:n]]
    assert kept(points, KeepPolicy(last=n)) == expected


def test_groups_compare_values_not_labels() -> None:
    """Paths `/a:b` and paths `/a`, `b` are two series (a label joined with `:`
    once put them in one, and keep-last 1 forgot the other source's point); a
    host holding control characters is shown escaped."""
    one = point("2026-01-01T00:00:00", "one", host="h")
    one.paths = ["/a:b"]
    two = point("2026-01-02T00:00:00", "two", host="h")
    two.paths = ["/a", "b"]
    odd = point("2026-01-03T00:00:00", "odd", host="h paths=/a:b")
    odd.paths = []
    evil = point("2026-01-04T00:00:00", "evil", host="x\nforged line\x1b[2J")
    groups = group_points([one, two, odd, evil], "host,paths")
    assert sorted(sorted(p.id for p in g) for g in groups.values()) == [
        ["evil"],
        ["odd"],
        ["one"],
        ["two"],
    ]
    assert all("\n" not in label and "\x1b" not in label for label in groups)
    assert len(set(groups)) == 4


# --- keep-within on the calendar (restic's --keep-within 1y6m, --keep-within-daily 7d)

from strongroom.services.forget import Span  # noqa: E402


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("7d", Span(days=7)),
        ("36h", Span(hours=36)),
        ("1y6m", Span(years=1, months=6)),
        ("2Y3m4D5h", Span(2, 3, 4, 5)),
        ("1d1d", Span(days=2)),
    ],
)
def test_spans_parse_as_restic_writes_them(text: str, span: Span) -> None:
    assert Span.parse(text) == span


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "1.5d", "-2d", "7d junk", "7 d", "99999999y"])
def test_malformed_spans_get_a_sentence(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        Span.parse(text)


def test_span_moves_back_on_the_calendar() -> None:
    t = datetime(2026, 3, 31, 12, tzinfo=UTC)
    assert Span(months=1).before(t) == datetime(2026, 2, 28, 12, tzinfo=UTC)  # clamped
    assert Span(years=1, months=2).before(t) == datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert Span(days=1, hours=13).before(t) == datetime(2026, 3, 29, 23, tzinfo=UTC)
    assert Span(years=5000).before(t) == datetime.min.replace(tzinfo=UTC)


def test_keep_within_counts_back_from_the_newest_point() -> None:
    """A series that stopped keeps its recent history (restic's semantics)."""
    assert kept(POINTS, KeepPolicy(within_span=Span(days=1))) == ["d5-12", "d4-20"]
    assert kept(POINTS, KeepPolicy(within_span=Span(days=3, hours=4))) == [
        "d5-12",
        "d4-20",
        "d4-08",
        "d2-09",
    ]


def test_keep_within_daily_keeps_one_per_day_inside_the_span() -> None:
    decisions = apply_policy(POINTS, KeepPolicy(within_buckets={"daily": Span(days=3, hours=4)}))
    assert [d.point.id for d in decisions if d.keep] == ["d5-12", "d4-20", "d2-09"]
    assert {d.point.id: d.reasons for d in decisions if d.keep}["d2-09"] == ["within-daily"]


@given(
    times=st.lists(
        st.datetimes(datetime(2020, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    days=st.integers(0, 400),
    rule=st.sampled_from(["hourly", "daily", "weekly", "monthly", "yearly"]),
)
def test_keep_within_buckets_match_a_reference(times: list[datetime], days: int, rule: str) -> None:
    """Within the span, exactly the newest point of each bucket; nothing outside."""
    points = [point(t) for t in times]
    newest = max(times)
    limit = newest - timedelta(days=days)
    key = {
        "hourly": lambda t: (t.year, t.month, t.day, t.hour),
        "daily": lambda t: t.date(),
        "weekly": lambda t: t.isocalendar()[:2],
        "monthly": lambda t: (t.year, t.month),
        "yearly": lambda t: t.year,
    }[rule]
    newest_of: dict[object, datetime] = {}
    for t in times:
        if t >= limit and (key(t) not in newest_of or t > newest_of[key(t)]):
            newest_of[key(t)] = t
    expected = sorted((t.isoformat() for t in newest_of.values()), reverse=True)
    assert kept(points, KeepPolicy(within_buckets={rule: Span(days=days)})) == expected
