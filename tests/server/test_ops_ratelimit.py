"""Sign-in rate limiting over a real catalog (SQLite and PostgreSQL): 429
with Retry-After once a name or an address failed too often, no password
verified meanwhile, recovery after the block, audit rows `limited`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from fastapi.testclient import TestClient

from strongroom.server import create_app
from strongroom.server.ratelimit import add_ratelimit_routes
from strongroom.services.accounts import Accounts
from strongroom.services.ratelimit import SignInLimiter
from tests.server.conftest import ADMIN_PASSWORD


class Clock:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_failed_sign_ins_are_limited_then_recover(accounts: Accounts) -> None:
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    clock = Clock()
    limiter = SignInLimiter(
        accounts.catalog, max_failures=3, window=timedelta(minutes=1),
        block=timedelta(minutes=2), clock=clock,
    )  # fmt: skip
    app = create_app(accounts, list, routers=[partial(add_ratelimit_routes, limiter=limiter)])
    verified = []
    real_sign_in = accounts.sign_in

    def counting(name: str, password: str) -> object:
        verified.append(name)
        return real_sign_in(name, password)

    accounts.sign_in = counting  # type: ignore[method-assign]
    wrong = {"name": "admin", "password": "wrong password!"}
    right = {"name": "admin", "password": ADMIN_PASSWORD}
    with TestClient(app) as client:
        assert [client.post("/api/v1/session", json=wrong).status_code for _ in range(3)] == [
            401, 401, 401,
        ]  # fmt: skip
        limited = client.post("/api/v1/session", json=right)
        assert limited.status_code == 429
        assert limited.json() == {"error": "too many failed sign-ins; try again later"}
        assert limited.headers["retry-after"] == "120"
        assert len(verified) == 3  # the limited attempt verified no password
        other = client.post("/api/v1/session", json={**wrong, "name": "someone"})
        assert other.status_code == 429  # the address is blocked too
        clock.now += timedelta(minutes=1)
        assert client.post("/api/v1/session", json=right).headers["retry-after"] == "60"
        clock.now += timedelta(minutes=1, seconds=1)
        assert client.post("/api/v1/session", json=right).status_code == 200
        assert client.post("/api/v1/session", json=wrong).status_code == 401  # counting again
    rows = [(a.action, a.target, a.outcome) for a in accounts.catalog.list_audit(limit=20)]
    assert rows.count(("session.create", "admin", "limited")) == 2
    assert ("session.create", "someone", "limited") in rows


def test_failures_outside_the_window_do_not_add_up(accounts: Accounts) -> None:
    clock = Clock()
    limiter = SignInLimiter(accounts.catalog, max_failures=2, clock=clock)
    limiter.failed("bob", "10.0.0.1")
    clock.now += limiter.window + timedelta(seconds=1)
    limiter.failed("bob", "10.0.0.2")
    assert limiter.retry_after("bob", "10.0.0.3") == 0
    limiter.failed("bob", "10.0.0.3")
    assert limiter.retry_after("bob", "10.0.0.9") == int(limiter.block.total_seconds())
    assert limiter.retry_after("alice", "10.0.0.9") == 0
    limiter.succeeded("bob")
    assert limiter.retry_after("bob", "10.0.0.9") == 0


def test_loopback_addresses_are_not_limited_but_names_are(accounts: Accounts) -> None:
    limiter = SignInLimiter(accounts.catalog, max_failures=2)
    for name in ("a", "b", "c"):
        limiter.failed(name, "127.0.0.1")
        limiter.failed(name, "::1")
    assert limiter.retry_after("d", "127.0.0.1") == 0  # a proxy's clients are not one
    assert limiter.retry_after("a", "127.0.0.1") > 0
