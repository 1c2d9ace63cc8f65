"""An in-process server with agents (FastAPI's TestClient) over a real
catalog (SQLite and PostgreSQL) and a real on-disk repository."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.server import create_app
from strongroom.server.agent_api import agent_routes
from strongroom.services.accounts import Accounts
from strongroom.services.agent_intake import Intake
from strongroom.services.agents import Agents
from tests.conftest import init_local_repository
from tests.helpers.cli import PASSWORD
from tests.server.conftest import ADMIN_PASSWORD, sign_in


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Site:
    client: TestClient  # signed in as the administrator
    csrf: str
    intake: Intake
    clock: Clock
    repo_path: Path

    def enroll(self, machine: str) -> dict[str, str]:
        token = self.token(machine)
        answer = self.client.post("/api/v1/agent/enroll", json={"token": token})
        assert answer.status_code == 200, answer.text
        doc: dict[str, str] = answer.json()
        return doc

    def token(self, machine: str, expires_in: int = 3600) -> str:
        answer = self.client.post(
            "/api/v1/enrollments",
            json={"machine": machine, "expires_in": expires_in},
            headers={"X-CSRF-Token": self.csrf},
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["token"])


def bearer(creds: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {creds['agent_id']}.{creds['secret']}"}


@pytest.fixture
def site(accounts: Accounts, tmp_path: Path) -> Iterator[Site]:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    intake = Intake(str(repo_path), PASSWORD.encode())
    clock = Clock()
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    app = create_app(
        accounts, lambda: [], routers=[agent_routes(Agents(accounts.catalog, clock), intake)]
    )
    try:
        with TestClient(app, base_url="http://testserver") as client:
            csrf = sign_in(client, "admin", ADMIN_PASSWORD)
            yield Site(client, csrf, intake, clock, repo_path)
    finally:
        intake.close()
