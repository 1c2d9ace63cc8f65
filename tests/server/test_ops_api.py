"""The operations API in process over a real catalog (SQLite and
PostgreSQL): server-side forget and prune jobs over a real repository made
with the CLI, schedules, the audit log and events, and who may do what."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.server import create_app
from strongroom.server.ops_api import add_ops_routes
from strongroom.services.accounts import Accounts, Role
from strongroom.services.operations import Operations, ServerLoops, server_operations
from tests.conftest import PASSWORD, CliRunner
from tests.server.conftest import ADMIN_PASSWORD, sign_in

USER_PASSWORD = "operator password 1"


@pytest.fixture
def ops(accounts: Accounts, repo_path: Path) -> tuple[Operations, ServerLoops]:
    return server_operations(accounts.catalog, str(repo_path), PASSWORD.encode(), worker="t1")


@pytest.fixture
def client(accounts: Accounts, ops: tuple[Operations, ServerLoops]) -> Iterator[TestClient]:
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user("op", USER_PASSWORD, Role.OPERATOR)
    accounts.create_user("ro", USER_PASSWORD, Role.READ_ONLY)
    app = create_app(accounts, list, routers=[partial(add_ops_routes, ops=ops[0])])
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def _as(client: TestClient, name: str) -> dict[str, str]:
    password = ADMIN_PASSWORD if name == "admin" else USER_PASSWORD
    return {"X-CSRF-Token": sign_in(client, name, password)}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# the jobs' catalog side runs on both backends in the other tests: one is enough here
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_forget_and_prune_jobs_run_on_the_server_over_a_real_repository(
    client: TestClient,
    ops: tuple[Operations, ServerLoops],
    accounts: Accounts,
    cli: CliRunner,
    tmp_path: Path,
    repo_path: Path,
) -> None:
    assert cli("init").rc == 0
    src = tmp_path / "src"
    src.mkdir()
    for _ in range(3):  # three points of one host/paths group, each with its own data
        (src / "data.bin").write_bytes(os.urandom(200_000))
        assert cli("backup", str(src)).rc == 0
    before = [p["id"] for p in cli("snapshots", "--json").json()]
    assert len(before) == 3
    headers = _as(client, "op")
    spec = {"keep_last": 1, "paths": [str(src)]}
    answer = client.post("/api/v1/jobs", json={"kind": "forget", "spec": spec}, headers=headers)
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["state"] == "queued" and job["spec"]["keep_last"] == 1
    loops = ops[1]
    ran = loops.jobs.run_one(loops.worker)
    assert ran is not None and ran.id == job["id"]
    shown = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert shown["state"] == "done", shown
    assert shown["outcome"] == "forgot 2 point(s) in 1 group(s)"
    assert [p["id"] for p in cli("snapshots", "--json").json()] == [before[-1]]

    size = _size(repo_path)
    answer = client.post("/api/v1/jobs", json={"kind": "prune"}, headers=headers)
    assert answer.status_code == 201
    loops.jobs.run_one(loops.worker)
    pruned = client.get(f"/api/v1/jobs/{answer.json()['id']}").json()
    assert pruned["state"] == "done" and pruned["outcome"].startswith("pruned: deleted")
    assert _size(repo_path) < size - 350_000  # the forgotten points' data is gone
    assert cli("check").rc == 0
    audit = [(a.action, a.outcome) for a in accounts.catalog.list_audit(limit=20)]
    assert ("job.forget", "ok") in audit and ("job.prune", "ok") in audit
    assert audit.count(("job.create", "ok")) == 2
    listed = client.get("/api/v1/jobs").json()
    assert [j["id"] for j in listed] == [answer.json()["id"], job["id"]]  # newest first


def test_a_forget_job_that_keeps_nothing_is_refused(client: TestClient) -> None:
    headers = _as(client, "op")
    for spec in ({}, {"keep_last": 0}, {"keep_last": -1}, {"bogus": 1}, {"keep_last": True}):
        answer = client.post("/api/v1/jobs", json={"kind": "forget", "spec": spec}, headers=headers)
        assert answer.status_code == 400, (spec, answer.text)
        assert "bogus" not in answer.json()["error"] or spec == {"bogus": 1}
    assert client.post("/api/v1/jobs", json={"kind": "rm -rf"}, headers=headers).status_code == 422
    assert client.get("/api/v1/jobs").json() == []


def test_jobs_can_be_cancelled_while_queued(
    client: TestClient, ops: tuple[Operations, ServerLoops]
) -> None:
    headers = _as(client, "op")
    job = client.post("/api/v1/jobs", json={"kind": "prune"}, headers=headers).json()
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=headers).status_code == 204
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "cancelled"
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=headers).status_code == 409
    assert client.delete("/api/v1/jobs/999", headers=headers).status_code == 404
    assert ops[1].jobs.run_one("w") is None


def test_schedules_for_administrators(client: TestClient) -> None:
    headers = _as(client, "admin")
    body = {"name": "nightly-prune", "kind": "prune", "calendar": "daily 03:00"}
    made = client.post("/api/v1/schedules", json=body, headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["next_due"].endswith("03:00:00+00:00")
    assert client.post("/api/v1/schedules", json=body, headers=headers).status_code == 409
    both = {**body, "name": "x", "every": 3600}
    assert client.post("/api/v1/schedules", json=both, headers=headers).status_code == 400
    bad = {"name": "y", "kind": "prune", "calendar": "someday"}
    assert client.post("/api/v1/schedules", json=bad, headers=headers).status_code == 400
    changed = client.patch(
        "/api/v1/schedules/nightly-prune", json={"every": 7200, "enabled": False}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    doc = changed.json()
    assert doc["every"] == 7200 and doc["calendar"] is None and doc["enabled"] is False
    assert [s["name"] for s in client.get("/api/v1/schedules").json()] == ["nightly-prune"]
    assert client.delete("/api/v1/schedules/nightly-prune", headers=headers).status_code == 204
    assert client.get("/api/v1/schedules/nightly-prune").status_code == 404


def test_the_audit_log_is_paged_newest_first(client: TestClient) -> None:
    _as(client, "admin")
    for _ in range(5):
        client.get("/api/v1/jobs")
    first = client.get("/api/v1/audit", params={"limit": 3}).json()
    assert len(first) == 3 and first[0]["id"] > first[1]["id"] > first[2]["id"]
    rest = client.get("/api/v1/audit", params={"limit": 100, "before": first[-1]["id"]}).json()
    assert rest and rest[0]["id"] < first[-1]["id"]
    every = [a["id"] for a in first + rest]
    assert every == sorted(every, reverse=True) and len(every) == len(set(every))
    assert rest[-1]["action"] == "session.create"
    assert client.get("/api/v1/audit", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize("who", ["ro", "op"])
def test_roles_are_refused_with_403(client: TestClient, who: str, accounts: Accounts) -> None:
    headers = _as(client, who)
    refused = [
        ("get", "/api/v1/schedules", None),
        ("post", "/api/v1/schedules", {"name": "n", "kind": "prune", "every": 3600}),
        ("get", "/api/v1/schedules/n", None),
        ("patch", "/api/v1/schedules/n", {"enabled": False}),
        ("delete", "/api/v1/schedules/n", None),
        ("get", "/api/v1/audit", None),
    ]
    if who == "ro":
        refused += [
            ("post", "/api/v1/jobs", {"kind": "prune"}),
            ("delete", "/api/v1/jobs/1", None),
        ]
    for method, path, body in refused:
        answer = client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 403, (method, path, answer.text)
    assert client.get("/api/v1/jobs").status_code == 200
    assert client.get("/api/v1/events").status_code == 200
    denied = [a for a in accounts.catalog.list_audit(limit=50) if a.outcome == "denied"]
    assert len(denied) == len(refused)
    client.cookies.clear()
    for path in ("/api/v1/jobs", "/api/v1/events", "/api/v1/audit"):
        assert client.get(path).status_code == 401
