"""The server's operations as services: running jobs, taking back the jobs
of dead workers, schedules fired once by racing loops, the maintenance lock
a killed holder loses (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.catalog import Catalog, JobState, Schedule, Severity
from strongroom.errors import MaintenanceLocked, StrongroomError
from strongroom.services.jobs import Jobs
from strongroom.services.maintenance_lock import maintenance_lock
from strongroom.services.scheduler import Scheduler, next_after
from tests.catalog.conftest import catalog, catalog_url, pg_cluster  # noqa: F401 (fixtures)

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_job_runs_with_progress_and_a_failure_raises_an_alert(
    catalog: Catalog,  # noqa: F811
) -> None:
    def work(job: object, progress: object) -> str:
        assert callable(progress)
        progress({"step": 1})
        return "pruned 3 packs"

    def broken(job: object, progress: object) -> str:
        raise StrongroomError("repository: no space left\nsecond line")

    jobs = Jobs(catalog, handlers={"prune": work, "forget": broken})
    done = jobs.enqueue("prune")
    failed = jobs.enqueue("forget", {"keep_last": 1})
    ran = [jobs.run_one("w", beat=0.01), jobs.run_one("w", beat=0.01)]
    assert jobs.run_one("w") is None
    assert [(j.id, j.state, j.outcome) for j in ran if j] == [
        (done.id, JobState.DONE, "pruned 3 packs"),
        (failed.id, JobState.FAILED, "repository: no space left"),
    ]
    (alert,) = catalog.list_events(kind="job.failed")
    assert alert.severity is Severity.ERROR and alert.data["job"] == failed.id
    assert "no space left" in alert.message


def test_a_dead_worker_loses_its_job_and_after_max_tries_it_fails(
    catalog: Catalog,  # noqa: F811
    clock: Clock,
) -> None:
    jobs = Jobs(catalog, clock=clock, heartbeat_timeout=timedelta(seconds=30), max_tries=2)
    job = jobs.enqueue("prune")
    first = jobs.claim("dies", ["prune"])
    assert first is not None
    clock.now += timedelta(seconds=20)
    assert jobs.recover() == [] and jobs.claim("other", ["prune"]) is None  # still alive
    clock.now += timedelta(seconds=31)  # its heartbeat stopped
    (back,) = jobs.recover()
    assert back.state is JobState.QUEUED
    second = jobs.claim("other", ["prune"])
    assert second is not None and second.id == job.id and second.claimed_by == "other"
    assert not jobs.heartbeat(first, "dies") and not jobs.finish(first, "dies", True, "late")
    clock.now += timedelta(minutes=5)  # the second worker dies too: tried twice, failed
    (gone,) = jobs.recover()
    assert gone.state is JobState.FAILED and "tried 2 times" in (gone.outcome or "")
    assert [e.data["job"] for e in catalog.list_events(kind="job.failed")] == [job.id]


def test_two_scheduler_loops_make_one_job_per_due_time_and_missed_runs_raise_an_event(
    catalog: Catalog,  # noqa: F811
    clock: Clock,
) -> None:
    catalog.add_schedule(Schedule("hourly-prune", "prune", T0, every_seconds=3600))
    loops = [Scheduler(catalog, clock), Scheduler(catalog, clock)]
    for step in range(2):  # due twice: at T0 and T0 + 1 h
        clock.now = T0 + timedelta(hours=step, seconds=1)
        fired: list[object] = []
        barrier = threading.Barrier(2)

        def run(s: Scheduler, barrier: threading.Barrier, fired: list[object]) -> None:
            barrier.wait()
            fired.extend(s.tick())

        threads = [threading.Thread(target=run, args=(s, barrier, fired)) for s in loops]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(fired) == 1
    dues = sorted(j.due for j in catalog.list_jobs())
    assert dues == [T0, T0 + timedelta(hours=1)]
    assert catalog.list_events(kind="schedule.missed") == []
    clock.now = T0 + timedelta(hours=5, minutes=30)  # no server ran for hours
    (late,) = loops[0].tick()
    assert late.due == T0 + timedelta(hours=2)
    assert catalog.get_schedule("hourly-prune").next_due == T0 + timedelta(hours=6)
    (missed,) = catalog.list_events(kind="schedule.missed")
    assert missed.severity is Severity.WARNING and missed.data["missed"] == 3
    assert loops[1].tick() == []


def test_calendar_schedules() -> None:
    daily = Schedule("d", "prune", T0, calendar="daily 03:30")
    assert next_after(daily, T0) == datetime(2026, 12, 8, 3, 30, tzinfo=UTC)
    weekly = Schedule("w", "prune", T0, calendar="weekly sun 01:00")  # T0 is a Monday
    assert next_after(weekly, T0) == datetime(2026, 12, 13, 1, 0, tzinfo=UTC)


_HOLDER = """
import sys, time
from strongroom.catalog import Catalog
from strongroom.services.maintenance_lock import maintenance_lock
catalog = Catalog.open(sys.argv[1])
with maintenance_lock(catalog, "prune", "child", lease=float(sys.argv[2])):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(catalog_url: str) -> Iterator[subprocess.Popen[str]]:  # noqa: F811
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, catalog_url, "1.5"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def test_the_maintenance_lock_is_refused_while_held_and_lost_by_a_killed_holder(
    catalog: Catalog,  # noqa: F811
    holder: subprocess.Popen[str],
) -> None:
    with pytest.raises(MaintenanceLocked), maintenance_lock(catalog, "prune", "me"):
        pass
    with maintenance_lock(catalog, "other-lock", "me"):  # other names are free
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()
    while True:
        try:
            with maintenance_lock(catalog, "prune", "me", lease=5):
                waited = time.monotonic() - killed
                with (  # and now it is ours
                    pytest.raises(MaintenanceLocked),
                    maintenance_lock(catalog, "prune", "third"),
                ):
                    pass
                break
        except MaintenanceLocked:
            assert time.monotonic() - killed < 10
            time.sleep(0.05)
    if catalog.dialect == "postgresql":
        assert waited < 1.0  # the connection dropped: at once
    else:
        assert 0.2 < waited < 2.5  # the 1.5 s lease had to expire


def test_a_busy_lock_sends_the_job_back_for_later_not_to_failure(
    catalog: Catalog,  # noqa: F811
    clock: Clock,
) -> None:
    def busy(job: object, progress: object) -> str:
        raise MaintenanceLocked("maintenance lock repository is held by another server")

    jobs = Jobs(catalog, clock=clock, handlers={"prune": busy}, max_tries=2)
    job = jobs.enqueue("prune")
    jobs.run_one("w", beat=0.01)
    assert job.id is not None
    back = catalog.get_job(job.id)
    assert back.state is JobState.QUEUED and back.due > T0 and back.claimed_by is None
    assert jobs.run_one("w") is None  # not due yet
    clock.now = back.due
    jobs.run_one("w", beat=0.01)  # tried twice: now it fails, with an alert
    assert catalog.get_job(job.id).state is JobState.FAILED
    assert len(catalog.list_events(kind="job.failed")) == 1


_WORKER = """
import sys, time
from datetime import timedelta
from strongroom.catalog import Catalog
from strongroom.services.jobs import Jobs
def forever(job, progress):
    print("running", flush=True)
    time.sleep(600)
    return "never"
jobs = Jobs(Catalog.open(sys.argv[1]), handlers={"prune": forever})
jobs.run_one("doomed", beat=0.1)
"""


def test_a_killed_worker_process_loses_its_job_to_another(
    catalog: Catalog,  # noqa: F811
    catalog_url: str,  # noqa: F811
) -> None:
    jobs = Jobs(catalog, heartbeat_timeout=timedelta(seconds=0.6))
    job = jobs.enqueue("prune")
    assert job.id is not None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _WORKER, catalog_url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "running"
        first = catalog.get_job(job.id).heartbeat
        deadline = time.monotonic() + 10
        while catalog.get_job(job.id).heartbeat == first:  # it beats while alive
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert jobs.recover() == [] and catalog.get_job(job.id).claimed_by == "doomed"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    while not jobs.recover():  # its heartbeat stopped: taken back after the timeout
        assert time.monotonic() < deadline
        time.sleep(0.05)
    taken = jobs.claim("survivor", ["prune"])
    assert taken is not None and taken.id == job.id and taken.tries == 2
