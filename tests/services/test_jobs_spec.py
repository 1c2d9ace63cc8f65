"""The parsers of the server's jobs (hypothesis): a job spec and a
schedule's time come from the network; anything refused is a one-line
UsageError, anything accepted is well formed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.catalog import Schedule
from strongroom.errors import UsageError
from strongroom.services.scheduler import check_when, next_after
from strongroom.services.server_jobs import check_spec

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
KEYS = st.sampled_from(
    ["keep_last", "keep_daily", "keep_tags", "hosts", "paths", "group_by", "prune", "max_unused"]
)


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(["forget", "prune", "backup"]), spec=st.dictionaries(KEYS, JSON))
def test_a_spec_is_checked_or_refused_in_one_line(kind: str, spec: dict[str, Any]) -> None:
    try:
        checked = check_spec(kind, spec)
    except UsageError as err:
        assert "\n" not in str(err) and len(str(err)) < 300
        return
    assert check_spec(kind, checked) == checked  # checking is idempotent
    if kind == "forget":
        assert any(checked[k] for k in checked if k.startswith("keep_"))


@settings(max_examples=100, deadline=None)
@given(
    every=st.integers(60, 10**6),
    due=st.datetimes(datetime(2020, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
    late=st.integers(-(10**7), 10**8),
)
def test_the_next_run_is_after_now_and_keeps_the_phase(
    every: int, due: datetime, late: int
) -> None:
    schedule = Schedule("s", "prune", due, every_seconds=every)
    now = due + timedelta(seconds=late)
    nxt = next_after(schedule, now)
    assert now < nxt <= max(now, due) + timedelta(seconds=every)
    assert (nxt - due).total_seconds() % every == 0


@given(text=st.text(max_size=20))
def test_calendar_texts(text: str) -> None:
    try:
        check_when(None, text)
    except UsageError:
        return
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    nxt = next_after(Schedule("s", "prune", now, calendar=text), now)
    assert now < nxt <= now + timedelta(days=7)
