"""Schedules turned into jobs, once, by whichever server process looks first.

Every server process runs `Scheduler.tick` on a thread (`ServerLoops`):
each enabled schedule whose `next_due` has come is fired: its job (due at
that time) is queued and `next_due` moves to the first run time after now,
in one transaction that succeeds for one process only (the catalog's
compare-and-set on `next_due`, and the unique (schedule, due) of jobs).
So two processes, or two loops in one, make exactly one job per due time.

- **Missed runs**: when a schedule's due time passed by more than its
  period (no server ran, or all were busy), the runs in between are not
  queued one by one: ONE job runs now and an event `schedule.missed`
  (warning) says how many runs were missed.
- **Failures**: a failed job raises `job.failed` (services/jobs.py); a job
  whose worker stopped is taken back by `Jobs.recover`, run by the same
  loop.

When: `every_seconds` (runs keep their phase: due + k * every), or a
`calendar`: `daily HH:MM` or `weekly DAY HH:MM` (mon..sun), in UTC.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from strongroom.catalog import Catalog, Event, Job, Schedule, Severity
from strongroom.errors import StrongroomError, UsageError
from strongroom.services.jobs import Jobs

log = logging.getLogger(__name__)

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CALENDAR = re.compile(r"(daily|weekly (mon|tue|wed|thu|fri|sat|sun)) ([01]\d|2[0-3]):([0-5]\d)")
MIN_EVERY = 60
MAX_EVERY = 366 * 86400


def check_when(every_seconds: int | None, calendar: str | None) -> None:
    """Exactly one of the two, well formed (UsageError otherwise)."""
    if (every_seconds is None) == (calendar is None):
        raise UsageError("a schedule needs one of 'every' (seconds) or 'calendar'")
    if every_seconds is not None and not MIN_EVERY <= every_seconds <= MAX_EVERY:
        raise UsageError(f"'every' must be {MIN_EVERY} to {MAX_EVERY} seconds")
    if calendar is not None and not _CALENDAR.fullmatch(calendar):
        raise UsageError("'calendar' is 'daily HH:MM' or 'weekly DAY HH:MM' (mon..sun, UTC)")


def period(schedule: Schedule) -> timedelta:
    if schedule.every_seconds is not None:
        return timedelta(seconds=schedule.every_seconds)
    assert schedule.calendar is not None
    return timedelta(days=1 if schedule.calendar.startswith("daily") else 7)


def first_run(every_seconds: int | None, calendar: str | None, now: datetime) -> datetime:
    """When a new schedule first runs: after one period, or the calendar's
    next time."""
    if every_seconds is not None:
        return now + timedelta(seconds=every_seconds)
    assert calendar is not None
    return _next_calendar(calendar, now)


def next_after(schedule: Schedule, now: datetime) -> datetime:
    """The first run time of `schedule` strictly after `now`."""
    if schedule.every_seconds is not None:
        step = timedelta(seconds=schedule.every_seconds)
        behind = max(0, (now - schedule.next_due) // step + 1)
        return schedule.next_due + behind * step
    assert schedule.calendar is not None
    return _next_calendar(schedule.calendar, now)


def _next_calendar(calendar: str, now: datetime) -> datetime:
    match = _CALENDAR.fullmatch(calendar)
    if match is None:
        raise UsageError(f"calendar {calendar[:40]!r} is not understood")
    hour, minute = int(match.group(3)), int(match.group(4))
    at = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    if match.group(2) is None:
        return at if at > now else at + timedelta(days=1)
    at += timedelta(days=(_DAYS.index(match.group(2)) - at.weekday()) % 7)
    return at if at > now else at + timedelta(days=7)


@dataclass
class Scheduler:
    catalog: Catalog
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def tick(self) -> list[Job]:
        """Fire every due schedule (the jobs this process queued)."""
        now = self.clock()
        fired: list[Job] = []
        for schedule in self.catalog.list_schedules(enabled=True):
            if schedule.next_due > now:
                continue
            job = self._fire(schedule, now)
            if job is not None:
                fired.append(job)
        return fired

    def _fire(self, schedule: Schedule, now: datetime) -> Job | None:
        late = now - schedule.next_due
        missed = late // period(schedule) if late > period(schedule) else 0
        job = Job(
            kind=schedule.kind,
            spec=dict(schedule.spec),
            due=schedule.next_due,
            created=now,
            machine=schedule.machine,
            schedule_id=schedule.id,
        )
        with self.catalog.transaction():
            queued = self.catalog.fire_schedule(schedule, next_after(schedule, now), job)
            if queued is not None and missed:
                self.catalog.add_event(
                    Event(
                        now,
                        "schedule.missed",
                        f"schedule {schedule.name}: {missed} run(s) missed since "
                        f"{schedule.next_due:%Y-%m-%d %H:%M} UTC; running once now",
                        Severity.WARNING,
                        data={"schedule": schedule.name, "missed": missed, "job": queued.id},
                    )
                )
        return queued


def worker_name() -> str:
    """This process as `claimed_by` names it: host, pid and a random tag."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class ServerLoops:
    """The two threads of a server process: the scheduler (fire schedules,
    take back stalled jobs) and the runner (claim and run server-side jobs
    such as forget and prune). `stop()` ends both; a job in flight runs to
    its end first."""

    scheduler: Scheduler
    jobs: Jobs
    worker: str = field(default_factory=worker_name)
    tick_seconds: float = 10.0
    poll_seconds: float = 2.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for name, body in (("scheduler", self._schedule), ("job-runner", self._run)):
            thread = threading.Thread(target=body, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _schedule(self) -> None:
        while not self._stop.is_set():
            try:
                self.scheduler.tick()
                self.jobs.recover()
            except StrongroomError as err:  # the catalog is away: try again later
                log.warning("scheduler: %s", err)
            self._stop.wait(self.tick_seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.jobs.run_one(self.worker)
            except StrongroomError as err:
                log.warning("job runner: %s", err)
                ran = None
            if ran is None:
                self._stop.wait(self.poll_seconds)
