"""Agents' jobs in process (TestClient) over a real catalog (SQLite and
PostgreSQL) and a real repository: an agent claims only its machine's jobs,
another machine's job is 404, progress and finish are recorded, a failure
raises an alert event; hostile specs and the wrong roles are refused;
a machine's backup schedule fires a job its agent claims."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from strongroom.catalog import JobState
from strongroom.server import create_app
from strongroom.server.agent_api import agent_routes
from strongroom.server.agent_jobs_api import agent_jobs_routes
from strongroom.server.ops_api import add_ops_routes
from strongroom.services.accounts import Accounts, Role
from strongroom.services.agent_intake import Intake
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.agents import Agents
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.dashboard import RepositoryView
from strongroom.services.operations import server_operations
from strongroom.services.scheduler import Scheduler
from tests.conftest import init_local_repository, open_local_repository
from tests.helpers.cli import PASSWORD
from tests.server.agent_fixtures import bearer
from tests.server.conftest import ADMIN_PASSWORD

OPERATOR = ("olga", "operator password 1")
READER = ("rita", "reader password 123")


@dataclass
class JobSite:
    app_client: TestClient
    accounts: Accounts
    point: str  # a files point of machine "web-1"
    source: Path

    def session(self, name: str, password: str) -> dict[str, str]:
        """Signs in (the client's cookie); the CSRF header to send."""
        self.app_client.cookies.clear()
        answer = self.app_client.post("/api/v1/session", json={"name": name, "password": password})
        assert answer.status_code == 200, answer.text
        return {"X-CSRF-Token": answer.json()["csrf_token"]}

    def enroll(self, machine: str) -> dict[str, str]:
        csrf = self.session("admin", ADMIN_PASSWORD)
        token = self.app_client.post(
            "/api/v1/enrollments", json={"machine": machine}, headers=csrf
        ).json()["token"]
        self.app_client.cookies.clear()
        creds = self.app_client.post("/api/v1/agent/enroll", json={"token": token}).json()
        return bearer(creds)

    def job(self, body: dict[str, Any], csrf: dict[str, str]) -> Any:
        return self.app_client.post("/api/v1/jobs", json=body, headers=csrf)


@pytest.fixture
def jsite(accounts: Accounts, tmp_path: Path) -> Iterator[JobSite]:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("hello jobs\n")
    (source / "sub" / "b.txt").write_text("b\n")
    repo = open_local_repository(repo_path)
    try:
        made = backup_files(repo, BackupRequest(paths=[str(source)], host="web-1"))
        assert made.point is not None
    finally:
        repo.close()
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user(*OPERATOR, Role.OPERATOR)
    accounts.create_user(*READER, Role.READ_ONLY)
    intake = Intake(str(repo_path), PASSWORD.encode())
    view = RepositoryView(str(repo_path), PASSWORD.encode(), ttl=0)
    agents = Agents(accounts.catalog)
    agent_jobs = AgentJobs.over(accounts.catalog, view)
    ops, _loops = server_operations(
        accounts.catalog, str(repo_path), PASSWORD.encode(), agent_specs=agent_jobs.check_spec
    )
    routers = [
        functools.partial(add_ops_routes, ops=ops),
        agent_routes(agents, intake),
        agent_jobs_routes(agents, agent_jobs),
    ]
    try:
        with TestClient(create_app(accounts, lambda: [], routers=routers)) as client:
            yield JobSite(client, accounts, made.point.id, source)
    finally:
        intake.close()


def _backup(machine: str, *paths: str) -> dict[str, Any]:
    return {"kind": "backup", "machine": machine, "spec": {"paths": list(paths)}}


def test_a_finish_names_only_a_point_of_its_own_machine(jsite: JobSite) -> None:
    web, db = jsite.enroll("web-1"), jsite.enroll("db-1")
    csrf = jsite.session(*OPERATOR)
    job = jsite.job(_backup("db-1", "/var/lib/db"), csrf).json()
    jsite.app_client.cookies.clear()
    c = jsite.app_client
    assert c.post("/api/v1/agent/jobs/claim", headers=db).json()["id"] == job["id"]
    finish = f"/api/v1/agent/jobs/{job['id']}/finish"
    # web-1's point, and a point that does not exist: refused alike
    for point in (jsite.point, "cd" * 32):
        answer = c.post(finish, json={"ok": True, "point": point}, headers=db)
        assert answer.status_code == 400
        assert answer.json() == {"error": "finish: no such point of this machine"}
    assert jsite.accounts.catalog.get_job(job["id"]).state == JobState.RUNNING  # still its
    # the job is still the agent's to finish properly
    done = c.post(finish, json={"ok": False, "outcome": "gave up"}, headers=db)
    assert done.json() == {"id": job["id"], "state": "failed"}
    # web-1 may name its own point
    csrf = jsite.session(*OPERATOR)
    mine = jsite.job(_backup("web-1", "/srv/www"), csrf).json()
    c.cookies.clear()
    assert c.post("/api/v1/agent/jobs/claim", headers=web).json()["id"] == mine["id"]
    ok = c.post(f"/api/v1/agent/jobs/{mine['id']}/finish",
                json={"ok": True, "point": jsite.point}, headers=web)  # fmt: skip
    assert ok.json() == {"id": mine["id"], "state": "done"}
    denied = [a for a in jsite.accounts.catalog.list_audit(limit=50) if a.outcome == "denied"]
    assert len(denied) == 2 and all(a.action == "agent.job" for a in denied)


def test_an_agent_claims_beats_and_finishes_only_its_machines_jobs(jsite: JobSite) -> None:
    web, db = jsite.enroll("web-1"), jsite.enroll("db-1")
    csrf = jsite.session(*OPERATOR)
    mine = jsite.job(_backup("web-1", "/srv/www"), csrf).json()
    other = jsite.job(_backup("db-1", "/var/lib/db"), csrf).json()
    assert mine["state"] == "queued" and mine["spec"]["one_file_system"] is False
    jsite.app_client.cookies.clear()  # agents carry no session
    c = jsite.app_client

    claimed = c.post("/api/v1/agent/jobs/claim", json={}, headers=web)
    assert claimed.status_code == 200
    assert claimed.json() == {"id": mine["id"], "kind": "backup", "tries": 1, "spec": mine["spec"]}
    assert c.post("/api/v1/agent/jobs/claim", headers=web).status_code == 204  # none left
    # another machine's job: the same 404 as no job at all
    for job_id in (other["id"], 999_999):
        for verb, body in (("progress", {"progress": {}}), ("finish", {"ok": True})):
            answer = c.post(f"/api/v1/agent/jobs/{job_id}/{verb}", json=body, headers=web)
            assert answer.status_code == 404, answer.text
    beat = c.post(
        f"/api/v1/agent/jobs/{mine['id']}/progress",
        json={"progress": {"files": 3, "bytes": 4096, "rate": 100}},
        headers=web,
    )
    assert beat.json() == {"running": True}
    # the session user sees the progress; an agent's bearer is no session
    assert c.get(f"/api/v1/jobs/{mine['id']}", headers=web).status_code == 401
    jsite.session(*READER)
    shown = c.get(f"/api/v1/jobs/{mine['id']}").json()
    assert shown["state"] == "running" and shown["claimed_by"] == "agent:web-1"
    assert shown["progress"] == {"files": 3, "bytes": 4096, "rate": 100}
    c.cookies.clear()
    done = c.post(
        f"/api/v1/agent/jobs/{mine['id']}/finish",
        json={"ok": True, "outcome": "3 files\nsecond line", "point": jsite.point},
        headers=web,
    )
    assert done.json() == {"id": mine["id"], "state": "done"}
    assert c.post("/api/v1/agent/jobs/claim", headers=db).json()["id"] == other["id"]
    failed = c.post(
        f"/api/v1/agent/jobs/{other['id']}/finish",
        json={"ok": False, "outcome": "/var/lib/db: no such file"},
        headers=db,
    )
    assert failed.json()["state"] == "failed"
    jsite.session(*READER)
    assert c.get(f"/api/v1/jobs/{mine['id']}").json()["outcome"] == f"point {jsite.point}: 3 files"
    alerts = c.get("/api/v1/events", params={"kind": "job.failed"}).json()
    assert len(alerts) == 1 and alerts[0]["severity"] == "error"
    assert alerts[0]["data"] == {"job": other["id"], "kind": "backup", "machine": "db-1"}
    assert "no such file" in alerts[0]["message"]
    actions = {(a.action, a.outcome) for a in jsite.accounts.catalog.list_audit(limit=50)}
    assert ("agent.job", "ok") in actions and ("agent.job", "failed") in actions
    # a session cookie is not an agent's credential
    assert c.post("/api/v1/agent/jobs/claim").status_code == 401


def test_a_claim_waits_for_a_job(jsite: JobSite) -> None:
    web = jsite.enroll("web-1")
    jsite.app_client.cookies.clear()
    answer = jsite.app_client.post("/api/v1/agent/jobs/claim", json={"wait": 0.6}, headers=web)
    assert answer.status_code == 204
    too_long = jsite.app_client.post("/api/v1/agent/jobs/claim", json={"wait": 60}, headers=web)
    assert too_long.status_code == 422


HOSTILE_BACKUPS: list[Any] = [
    {"paths": []},
    {"paths": ["relative/path"]},
    {"paths": ["/a/../etc"]},
    {"paths": ["/a\0b"]},
    {"paths": ["/" + "a" * 5000]},
    {"paths": [f"/p{i}" for i in range(65)]},
    {"paths": ["/srv"], "excludes": ["*"] * 257},
    {"paths": ["/srv"], "tags": [{"nested": 1}]},
    {"paths": ["/srv"], "one_file_system": "yes"},
    {"paths": ["/srv"], "kind": "image"},
    {"paths": ["/srv"], "shell": "rm -rf /"},
    {"paths": "/srv"},
]


def test_hostile_backup_specs_are_refused(jsite: JobSite) -> None:
    jsite.enroll("web-1")
    csrf = jsite.session(*OPERATOR)
    for spec in HOSTILE_BACKUPS:
        answer = jsite.job({"kind": "backup", "machine": "web-1", "spec": spec}, csrf)
        assert answer.status_code == 400, (spec, answer.text)
        assert "\0" not in answer.text and "rm -rf" not in answer.text


def test_restore_jobs_name_a_point_and_paths_of_that_machine(jsite: JobSite) -> None:
    jsite.enroll("web-1")
    jsite.enroll("db-1")
    csrf = jsite.session(*OPERATOR)
    src = str(jsite.source)

    def restore(machine: str, **spec: Any) -> Any:
        body = {"point": jsite.point, "target": "/restore", **spec}
        return jsite.job({"kind": "restore", "machine": machine, "spec": body}, csrf)

    good = restore("web-1", paths=[f"{src}/sub", f"{src}//a.txt"], overwrite="refuse")
    assert good.status_code == 201, good.text
    assert good.json()["spec"]["paths"] == [f"{src}/sub", f"{src}/a.txt"]
    assert restore("web-1").json()["spec"]["overwrite"] == "replace"
    refused = [
        restore("db-1"),  # another machine's point
        restore("web-1", point="cd" * 32),  # no such point
        restore("web-1", point="../x"),
        restore("web-1", paths=[f"{src}/nothing"]),
        restore("web-1", paths=["sub"]),
        restore("web-1", paths=["/x"] * 1001),
        restore("web-1", target="relative"),
        restore("web-1", target="/a/../b"),
        restore("web-1", overwrite="merge"),
        restore("nobody"),
        jsite.job({"kind": "restore", "spec": {"point": jsite.point, "target": "/r"}}, csrf),
        jsite.job({"kind": "prune", "machine": "web-1", "spec": {}}, csrf),
    ]
    assert [r.status_code for r in refused] == [400] * len(refused), [r.text for r in refused]
    assert refused[0].json()["error"] == "restore: no such point of that machine"


def test_roles_and_machine_schedules(jsite: JobSite) -> None:
    web = jsite.enroll("web-1")
    csrf = jsite.session(*READER)
    assert jsite.job(_backup("web-1", "/srv"), csrf).status_code == 403
    csrf = jsite.session(*OPERATOR)
    sched = {
        "name": "web-nightly",
        "kind": "backup",
        "machine": "web-1",
        "spec": {"paths": ["/srv"]},
        "every": 3600,
    }
    c = jsite.app_client
    assert c.post("/api/v1/schedules", json=sched, headers=csrf).status_code == 403
    csrf = jsite.session("admin", ADMIN_PASSWORD)
    made = c.post("/api/v1/schedules", json=sched, headers=csrf)
    assert made.status_code == 201 and made.json()["machine"] == "web-1"
    for bad in (
        {"kind": "restore", "spec": {"point": jsite.point, "target": "/r"}},
        {"machine": None},
        {"spec": {"paths": ["nope"]}},
        {"machine": "nobody"},
    ):
        answer = c.post("/api/v1/schedules", json={**sched, "name": "other", **bad}, headers=csrf)
        assert answer.status_code == 400, (bad, answer.text)
    changed = c.patch(
        "/api/v1/schedules/web-nightly", json={"spec": {"paths": ["/a\0"]}}, headers=csrf
    )
    assert changed.status_code == 400
    # the schedule comes due: one job for web-1, which its agent claims
    catalog = jsite.accounts.catalog
    due_now = datetime.now(UTC) - timedelta(seconds=1)
    catalog.update_schedule(replace(catalog.get_schedule("web-nightly"), next_due=due_now))
    fired = Scheduler(catalog).tick()
    assert [(j.kind, j.machine) for j in fired] == [("backup", "web-1")]
    c.cookies.clear()
    claimed = c.post("/api/v1/agent/jobs/claim", headers=web).json()
    assert claimed["id"] == fired[0].id and claimed["spec"]["paths"] == ["/srv"]


def test_progress_is_bounded(jsite: JobSite) -> None:
    web = jsite.enroll("web-1")
    csrf = jsite.session(*OPERATOR)
    job = jsite.job(_backup("web-1", "/srv"), csrf).json()
    c = jsite.app_client
    c.cookies.clear()
    c.post("/api/v1/agent/jobs/claim", headers=web)
    url = f"/api/v1/agent/jobs/{job['id']}/progress"
    for bad in (
        {f"k{i}": 1 for i in range(40)},
        {"nested": {"a": 1}},
        {"BAD KEY": 1},
        {"a": "x" * 200, **{f"b_{c}": "y" * 200 for c in "abcdefghijklmnopqrst"}},
    ):
        answer = c.post(url, json={"progress": bad}, headers=web)
        assert answer.status_code in (400, 422), answer.text
    assert c.post(url, json={"progress": {"current": "z" * 9999}}, headers=web).json() == {
        "running": True
    }
