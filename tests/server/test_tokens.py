"""API tokens for scripts, in process over a real catalog (SQLite and
PostgreSQL): made from a session, shown once, used as a bearer with no
CSRF header and the user's role; a token cannot make tokens; removed,
expired, or its user disabled: 401; the secret never in a list or the
audit log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from strongroom.server import create_app
from strongroom.server.tokens_api import add_token_routes
from strongroom.services.accounts import Accounts, Role
from tests.server.conftest import ADMIN_PASSWORD, FAST_HASHER, sign_in

READER = ("rita", "reader password 123")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tclient(accounts: Accounts, clock: Clock) -> Iterator[TestClient]:
    timed = Accounts(accounts.catalog, hasher=FAST_HASHER, clock=clock)
    timed.ensure_administrator(lambda: ADMIN_PASSWORD)
    timed.create_user(*READER, Role.READ_ONLY)
    points = [{"id": "ab" * 32, "host": "h"}]
    app = create_app(timed, lambda: points, routers=[add_token_routes])
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def _token(client: TestClient, user: str, password: str, **body: object) -> str:
    csrf = sign_in(client, user, password)
    made = client.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    client.cookies.clear()  # what follows is the script: no session
    secret = made.json()["token"]
    assert isinstance(secret, str) and secret.startswith("srt_")
    return secret


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("catalog_url", ["sqlite", "postgresql"], indirect=True)
def test_a_script_acts_as_its_user_with_a_token(
    tclient: TestClient, accounts: Accounts, clock: Clock
) -> None:
    c = tclient
    secret = _token(c, "admin", ADMIN_PASSWORD, name="nightly-report", days=30)
    me = c.get("/api/v1/me", headers=_bearer(secret))
    assert me.status_code == 200 and me.json()["role"] == "administrator"
    assert c.get("/api/v1/points", headers=_bearer(secret)).json()[0]["host"] == "h"
    # a change with no CSRF header: a bearer is no cookie a browser sends by itself
    made = c.post(
        "/api/v1/users",
        json={"name": "ops2", "password": "another password", "role": "operator"},
        headers=_bearer(secret),
    )
    assert made.status_code == 201, made.text
    # a token cannot make tokens
    again = c.post("/api/v1/tokens", json={"name": "more"}, headers=_bearer(secret))
    assert again.status_code == 403
    listed = c.get("/api/v1/tokens", headers=_bearer(secret)).json()
    assert [t["name"] for t in listed] == ["nightly-report"] and "token" not in listed[0]
    assert listed[0]["last_used"] is not None and listed[0]["expires"] is not None
    # expired
    clock.now += timedelta(days=31)
    assert c.get("/api/v1/me", headers=_bearer(secret)).status_code == 401
    # bad, foreign-looking and agent-shaped bearers
    for bad in ("srt_" + "x" * 43, "nope", "1.abcdef"):
        assert c.get("/api/v1/me", headers=_bearer(bad)).status_code == 401
    rows = accounts.catalog.list_audit(limit=50)
    assert ("token.create", "ok") in {(a.action, a.outcome) for a in rows}
    assert ("token.create", "denied") in {(a.action, a.outcome) for a in rows}
    assert not any(secret in f"{a.target} {a.action}" for a in rows)


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_roles_removal_and_disabling_end_what_a_token_may_do(
    tclient: TestClient, accounts: Accounts
) -> None:
    c = tclient
    secret = _token(c, *READER, name="dash")  # no end unless removed
    assert c.get("/api/v1/me", headers=_bearer(secret)).json()["expires"] is None
    users = c.get("/api/v1/users", headers=_bearer(secret))
    assert users.status_code == 403  # the user's role: read-only
    # names: checked, one per user
    csrf = {"X-CSRF-Token": sign_in(c, *READER)}
    assert c.post("/api/v1/tokens", json={"name": "dash"}, headers=csrf).status_code == 409
    assert c.post("/api/v1/tokens", json={"name": "../x"}, headers=csrf).status_code == 400
    assert c.post("/api/v1/tokens", json={"name": "x", "days": 0}, headers=csrf).status_code == 422
    assert c.delete("/api/v1/tokens/dash", headers=csrf).status_code == 204
    assert c.delete("/api/v1/tokens/dash", headers=csrf).status_code == 404
    c.cookies.clear()
    assert c.get("/api/v1/me", headers=_bearer(secret)).status_code == 401  # removed
    second = _token(c, *READER, name="dash2")
    accounts.catalog.update_user("rita", disabled=True)
    assert c.get("/api/v1/me", headers=_bearer(second)).status_code == 401  # disabled
    accounts.catalog.update_user("rita", disabled=False)
    assert c.get("/api/v1/me", headers=_bearer(second)).status_code == 200
    accounts.catalog.remove_user("rita")  # its tokens go with it
    assert c.get("/api/v1/me", headers=_bearer(second)).status_code == 401
