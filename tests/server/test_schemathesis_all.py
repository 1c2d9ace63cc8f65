"""schemathesis over the WHOLE API as `strongroom server` builds it
(server/assembly.py: the core, operations, metrics, sign-in limits, media,
agents, agents' jobs and the dashboard), in process (ASGI), over a real
repository and a real catalog (SQLite and PostgreSQL). Users' endpoints are
called signed in as an administrator with the CSRF header, `/api/v1/agent/*`
with a real enrolled agent's bearer. No answer is a server error (5xx) and
every documented answer matches its schema. Bounded: a few fixed
(derandomized) examples per operation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from strongroom.config import Settings
from strongroom.server.assembly import assemble
from strongroom.server.guards import COOKIE
from strongroom.services.accounts import Accounts
from tests.conftest import init_local_repository
from tests.helpers.cli import PASSWORD
from tests.server.agent_fixtures import bearer
from tests.server.conftest import ADMIN_PASSWORD

EXAMPLES = 6
# what would end the run's own session or revoke its agent (tested elsewhere:
# test_api.py, test_agents.py)
SKIP = {("DELETE", "/api/v1/session"), ("POST", "/api/v1/session"),
        ("PATCH", "/api/v1/users/{name}")}  # fmt: skip
MACHINE = "schema-machine-1"


@pytest.mark.parametrize("catalog_url", ["sqlite", "postgresql"], indirect=True)
def test_no_server_error_and_answers_match_the_schema(accounts: Accounts, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init_local_repository(repo)
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    built = assemble(accounts, Settings(repo=str(repo)), PASSWORD.encode(), worker="t")
    try:
        _run(built.app)
    finally:
        built.close()


def _run(app: Any) -> None:
    with TestClient(app) as client:
        signed = client.post("/api/v1/session", json={"name": "admin", "password": ADMIN_PASSWORD})
        assert signed.status_code == 200
        cookies = {COOKIE: signed.cookies[COOKIE]}
        user = {"X-CSRF-Token": signed.json()["csrf_token"]}
        made = client.post("/api/v1/enrollments", json={"machine": MACHINE}, headers=user)
        assert made.status_code == 201, made.text
        client.cookies.clear()
        creds = client.post("/api/v1/agent/enroll", json={"token": made.json()["token"]})
        assert creds.status_code == 200, creds.text
        agent = bearer(creds.json())
    raw = app.openapi()
    ids = [op["operationId"] for item in raw["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))  # each operation its own id (the bundle upload had one)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    checked: set[str] = set()
    statuses: dict[str, list[int]] = {"user": [], "agent": [], "enroll": []}
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in SKIP:
            continue
        who = "agent" if operation.path.startswith("/api/v1/agent/") else "user"
        if operation.path == "/api/v1/agent/enroll":
            who = "enroll"  # a one-time token in the body, no credentials: 401s expected

        _check(operation, agent if who == "agent" else user, cookies if who == "user" else {},
               statuses[who])  # fmt: skip
        checked.add(f"{key[0]} {key[1]}")
    # every router is in the schema the run went through
    for expected in (
        "GET /api/v1/points",  # the core
        "GET /api/v1/jobs",  # operations
        "GET /api/v1/libraries",  # media
        "POST /api/v1/agent/chunks/missing",  # agents
        "POST /api/v1/agent/jobs/claim",  # agents' jobs
        "PUT /api/v1/agent/chunks",
        "POST /api/v1/tokens",  # API tokens
        "POST /api/v1/agent/chunks",
    ):
        assert expected in checked, expected
    assert len(checked) >= 30
    for who in ("user", "agent"):
        seen = statuses[who]
        assert 401 not in seen, who  # signed in (or the agent's bearer) throughout
        assert sum(200 <= s < 300 for s in seen) >= 5, who  # not only refusals


def _check(
    operation: Any, headers: dict[str, str], cookies: dict[str, str], statuses: list[int]
) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples in every run: CI stays reproducible
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if case.path == "/api/v1/agent/jobs/claim" and isinstance(case.body, dict):
            case.body = {**case.body, "wait": 0}  # no long poll: the run stays short
        response = case.call(headers=headers, cookies=cookies)
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    run()
