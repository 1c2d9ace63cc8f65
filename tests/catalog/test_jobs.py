"""Jobs claimed through the catalog: each exactly once, however many
threads or processes race for them (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.catalog import Catalog, Job, JobState, Schedule

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
JOBS = 200


def _queue(catalog: Catalog, n: int = JOBS, kind: str = "prune") -> None:
    with catalog.transaction():
        for i in range(n):
            catalog.add_job(Job(kind=kind, spec={"i": i}, due=NOW, created=NOW))


def test_two_threads_claim_every_job_exactly_once(catalog: Catalog) -> None:
    _queue(catalog)
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    def claimer(name: str) -> None:
        while (job := catalog.claim_job(name, ["prune"], None, NOW)) is not None:
            assert job.id is not None and job.claimed_by == name
            claimed[name].append(job.id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = claimed["a"] + claimed["b"]
    assert sorted(every) == sorted({j.id for j in catalog.list_jobs(limit=1000)})
    assert len(every) == len(set(every)) == JOBS
    assert claimed["a"] and claimed["b"]  # both took part
    assert catalog.count_jobs() == {("prune", "running"): JOBS}


_CLAIMER = """
import json, sys
from datetime import UTC, datetime
from strongroom.catalog import Catalog
catalog = Catalog.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
got = []
while (job := catalog.claim_job(sys.argv[2], ["prune"], None, datetime.now(UTC))) is not None:
    got.append(job.id)
print(json.dumps(got), flush=True)
"""


# SQLite serialises every writer (threads above show it): the processes race where it matters
@pytest.mark.parametrize(
    "catalog_url",
    [pytest.param("postgresql", marks=pytest.mark.xdist_group("postgresql"))],
    indirect=True,
)
def test_two_processes_claim_every_job_exactly_once(catalog: Catalog, catalog_url: str) -> None:
    _queue(catalog)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, catalog_url, f"proc-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(2)
    ]
    for child in children:  # both opened: start them together
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    every = results[0] + results[1]
    assert len(every) == len(set(every)) == JOBS
    owners = {j.id: j.claimed_by for j in catalog.list_jobs(limit=1000)}
    assert all(owners[i] == "proc-0" for i in results[0])
    assert all(owners[i] == "proc-1" for i in results[1])


def test_claims_respect_kind_machine_and_due(catalog: Catalog) -> None:
    later = catalog.add_job(Job("prune", {}, NOW + timedelta(hours=1), NOW))
    agent = catalog.add_job(Job("backup", {}, NOW, NOW, machine="web1"))
    assert catalog.claim_job("w", ["prune", "backup"], None, NOW) is None  # not due / not ours
    assert catalog.claim_job("w", ["prune"], "web1", NOW) is None
    got = catalog.claim_job("agent", ["backup"], "web1", NOW)
    assert got is not None and got.id == agent.id and got.tries == 1
    assert catalog.claim_job("w", ["prune"], None, NOW + timedelta(hours=1)) is not None
    assert later.id is not None and catalog.get_job(later.id).state is JobState.RUNNING


def test_only_the_holder_heartbeats_and_finishes_and_stale_jobs_come_back(
    catalog: Catalog,
) -> None:
    _queue(catalog, 1)
    job = catalog.claim_job("dead", ["prune"], None, NOW)
    assert job is not None and job.id is not None
    assert not catalog.heartbeat_job(job.id, "other", NOW)
    assert catalog.heartbeat_job(job.id, "dead", NOW, {"done": 1})
    assert catalog.take_back_stale_jobs(NOW - timedelta(seconds=1), 3, NOW) == []
    later = NOW + timedelta(minutes=5)
    (back,) = catalog.take_back_stale_jobs(later - timedelta(minutes=1), 3, later)
    assert back.state is JobState.QUEUED and back.claimed_by is None
    again = catalog.claim_job("alive", ["prune"], None, later)
    assert again is not None and again.id == job.id and again.tries == 2
    assert not catalog.finish_job(job.id, "dead", JobState.DONE, "late", later)
    assert catalog.finish_job(job.id, "alive", JobState.DONE, "ok", later)
    assert catalog.get_job(job.id).state is JobState.DONE


def test_a_schedule_fires_once_per_due_time(catalog: Catalog) -> None:
    schedule = catalog.add_schedule(Schedule("nightly", "prune", NOW, every_seconds=3600))
    job = Job("prune", {}, NOW, NOW, schedule_id=schedule.id)
    first = catalog.fire_schedule(schedule, NOW + timedelta(hours=1), job)
    second = catalog.fire_schedule(schedule, NOW + timedelta(hours=1), job)  # a stale read
    assert first is not None and second is None
    assert catalog.get_schedule("nightly").next_due == NOW + timedelta(hours=1)
    assert len(catalog.list_jobs()) == 1
