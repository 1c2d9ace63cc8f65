"""The HTTP API in process, over a real catalog (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi.testclient import TestClient

from strongroom.services.accounts import Accounts, Role
from tests.server.conftest import ADMIN_PASSWORD, make_client, sign_in


def test_the_first_start_creates_one_administrator_and_only_once(accounts: Accounts) -> None:
    created = accounts.ensure_administrator(lambda: None)
    assert created is not None
    name, generated = created
    assert name == "admin" and generated is not None and len(generated) >= 20
    assert accounts.catalog.get_user("admin").role is Role.ADMINISTRATOR
    assert generated not in accounts.catalog.get_user("admin").password_hash
    assert accounts.catalog.get_user("admin").password_hash.startswith("$argon2id$")
    assert accounts.ensure_administrator(lambda: None) is None
    assert accounts.sign_in("admin", generated) is not None


def test_health_needs_no_session_and_the_rest_does(client: TestClient) -> None:
    assert client.get("/api/v1/health").json()["status"] == "ok"
    for path in ("/api/v1/me", "/api/v1/points", "/api/v1/users"):
        answer = client.get(path)
        assert answer.status_code == 401 and answer.json() == {"error": "not signed in"}
    schema = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/session", "/api/v1/users", "/api/v1/points"} <= set(schema["paths"])


def test_sign_in_me_and_sign_out(client: TestClient, accounts: Accounts) -> None:
    csrf = sign_in(client, "admin", ADMIN_PASSWORD)
    cookie = client.cookies.get("strongroom_session")
    assert cookie and accounts.catalog.find_login_session(cookie) is None  # only a digest stored
    me = client.get("/api/v1/me").json()
    assert me["name"] == "admin" and me["role"] == "administrator" and me["csrf_token"] == csrf
    assert client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.set("strongroom_session", cookie)  # a copy of the old cookie
    assert client.get("/api/v1/me").status_code == 401
    actions = [(a.action, a.outcome, a.user) for a in accounts.catalog.list_audit()]
    assert actions[:2] == [
        ("session.delete", "ok", "admin"),
        ("session.create", "ok", "admin"),
    ]
    assert actions[0] and accounts.catalog.list_audit()[0].address == "testclient"


def test_the_session_cookie_is_httponly_strict_and_secure_under_tls(
    accounts: Accounts, client: TestClient
) -> None:
    body = {"name": "admin", "password": ADMIN_PASSWORD}
    plain = client.post("/api/v1/session", json=body).headers["set-cookie"].lower()
    assert "httponly" in plain and "samesite=strict" in plain and "secure" not in plain
    with make_client(accounts, list, secure_cookies=True) as tls:
        header = tls.post("/api/v1/session", json=body).headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header and "secure" in header


def test_a_wrong_password_and_an_unknown_name_answer_alike(
    client: TestClient, accounts: Accounts
) -> None:
    wrong = client.post("/api/v1/session", json={"name": "admin", "password": "nope" * 4})
    nobody = client.post("/api/v1/session", json={"name": "ghost", "password": "nope" * 4})
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json() == {"error": "wrong name or password"}
    assert "set-cookie" not in wrong.headers
    assert [(a.target, a.outcome) for a in accounts.catalog.list_audit()] == [
        ("ghost", "failed"),
        ("admin", "failed"),
    ]
    accounts.catalog.update_user("admin", disabled=True)
    disabled = client.post("/api/v1/session", json={"name": "admin", "password": ADMIN_PASSWORD})
    assert disabled.status_code == 401 and disabled.json() == wrong.json()


def test_errors_never_echo_a_password_and_bodies_are_bounded(client: TestClient) -> None:
    secret = "s3cret-" * 200  # over MAX_PASSWORD
    answer = client.post("/api/v1/session", json={"name": "admin", "password": secret})
    assert answer.status_code == 422 and "s3cret" not in answer.text
    assert answer.json() == {"error": "invalid request: password"}
    big = client.post(
        "/api/v1/session",
        content=json.dumps({"name": "admin", "password": "x" * 100_000}),
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["error"].startswith("request body over")


def test_state_changes_need_the_csrf_token(client: TestClient, accounts: Accounts) -> None:
    csrf = sign_in(client, "admin", ADMIN_PASSWORD)
    new = {"name": "olga", "password": "operator password", "role": "operator"}
    missing = client.post("/api/v1/users", json=new)
    wrong = client.post("/api/v1/users", json=new, headers={"X-CSRF-Token": "0" * 64})
    assert missing.status_code == wrong.status_code == 403
    assert "X-CSRF-Token" in missing.json()["error"]
    assert accounts.catalog.find_user("olga") is None
    assert client.delete("/api/v1/session").status_code == 403
    assert client.get("/api/v1/me").status_code == 200  # still signed in
    made = client.post("/api/v1/users", json=new, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201 and made.json()["role"] == "operator"
    assert accounts.catalog.list_audit(action="csrf")[0].outcome == "denied"


def test_users_crud_is_for_administrators_only(client: TestClient, accounts: Accounts) -> None:
    csrf = sign_in(client, "admin", ADMIN_PASSWORD)
    h = {"X-CSRF-Token": csrf}
    for name, role in (("rita", "read-only"), ("otto", "operator")):
        body = {"name": name, "password": f"{name} password!", "role": role}
        assert client.post("/api/v1/users", json=body, headers=h).status_code == 201
    again = client.post(
        "/api/v1/users", json={"name": "rita", "password": "x" * 12, "role": "operator"}, headers=h
    )
    assert again.status_code == 409
    short = client.post(
        "/api/v1/users", json={"name": "sam", "password": "short", "role": "operator"}, headers=h
    )
    assert short.status_code == 400 and "12" in short.json()["error"]
    assert [u["name"] for u in client.get("/api/v1/users").json()] == ["admin", "otto", "rita"]
    assert client.get("/api/v1/users/nobody").status_code == 404
    changed = client.patch("/api/v1/users/otto", json={"role": "administrator"}, headers=h)
    assert changed.json()["role"] == "administrator"

    with make_client(accounts, list) as reader:
        rcsrf = sign_in(reader, "rita", "rita password!")
        body = {"name": "eve", "password": "eve password!", "role": "administrator"}
        denied = reader.post("/api/v1/users", json=body, headers={"X-CSRF-Token": rcsrf})
        assert denied.status_code == 403 and denied.json() == {"error": "administrators only"}
        assert reader.get("/api/v1/users").status_code == 403
        assert reader.get("/api/v1/points").status_code == 200
    assert accounts.catalog.find_user("eve") is None

    assert client.delete("/api/v1/users/rita", headers=h).status_code == 204
    assert client.patch("/api/v1/users/otto", json={"disabled": True}, headers=h).status_code == 200
    last = client.delete("/api/v1/users/admin", headers=h)
    assert last.status_code == 409 and "last administrator" in last.json()["error"]
    demote = client.patch("/api/v1/users/admin", json={"role": "operator"}, headers=h)
    assert demote.status_code == 409
    audit = {(a.action, a.target, a.outcome) for a in accounts.catalog.list_audit(limit=50)}
    assert {
        ("user.create", "rita", "ok"),
        ("user.create", "rita", "failed"),
        ("user.change", "otto", "ok"),
        ("user.remove", "rita", "ok"),
        ("user.remove", "admin", "failed"),
        ("POST /api/v1/users", "-", "denied"),
    } <= audit


def test_a_changed_password_ends_the_users_sessions(client: TestClient, accounts: Accounts) -> None:
    csrf = sign_in(client, "admin", ADMIN_PASSWORD)
    h = {"X-CSRF-Token": csrf}
    body = {"name": "otto", "password": "otto password!", "role": "operator"}
    client.post("/api/v1/users", json=body, headers=h)
    with make_client(accounts, list) as otto:
        sign_in(otto, "otto", "otto password!")
        assert otto.get("/api/v1/me").status_code == 200
        client.patch("/api/v1/users/otto", json={"password": "a new password"}, headers=h)
        assert otto.get("/api/v1/me").status_code == 401
        sign_in(otto, "otto", "a new password")


def test_points_come_from_the_lister_and_are_audited(
    client: TestClient, accounts: Accounts
) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    assert client.get("/api/v1/points").json() == [{"id": "ab" * 32, "host": "h"}]
    assert accounts.catalog.list_audit(action="points.list")[0].outcome == "ok"


def test_sessions_expire_and_end_when_idle(accounts: Accounts) -> None:
    from datetime import UTC, datetime, timedelta

    from strongroom.services.accounts import SESSION_IDLE, SESSION_LIFETIME
    from tests.server.conftest import FAST_HASHER

    now = [datetime(2026, 12, 7, 9, 0, tzinfo=UTC)]
    timed = Accounts(accounts.catalog, hasher=FAST_HASHER, clock=lambda: now[0])
    timed.create_user("ivy", "ivy's password", Role.OPERATOR)
    signed = timed.sign_in("ivy", "ivy's password")
    assert signed is not None
    now[0] += SESSION_IDLE - timedelta(seconds=1)
    assert timed.session(signed.token) is not None  # and refreshed
    now[0] += SESSION_IDLE - timedelta(seconds=1)
    assert timed.session(signed.token) is not None
    now[0] += SESSION_IDLE + timedelta(seconds=1)
    assert timed.session(signed.token) is None  # idle too long: gone
    again = timed.sign_in("ivy", "ivy's password")
    assert again is not None
    for _ in range(int(SESSION_LIFETIME / SESSION_IDLE) + 1):
        now[0] += SESSION_IDLE - timedelta(minutes=1)
        timed.session(again.token)
    assert timed.session(again.token) is None  # past its lifetime
    assert timed.session("x" * 500) is None


def test_a_chunked_body_is_bounded_too(client: TestClient) -> None:
    def parts() -> Iterator[bytes]:
        yield b'{"name": "admin", "password": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    answer = client.post(
        "/api/v1/session", content=parts(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413


def test_a_failing_catalog_is_a_one_line_503(client: TestClient, accounts: Accounts) -> None:
    csrf = sign_in(client, "admin", ADMIN_PASSWORD)
    with accounts.catalog.transaction() as c:
        c.exec_driver_sql("DROP TABLE audit_log")
    answer = client.get("/api/v1/points", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 503 and answer.json()["error"].startswith("catalog ")
    assert "\n" not in answer.json()["error"] and "Traceback" not in answer.text
