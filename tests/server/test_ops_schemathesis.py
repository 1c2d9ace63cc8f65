"""schemathesis against the API's own OpenAPI schema, in process (ASGI),
signed in as an administrator with the CSRF header: no answer is a server
error (5xx) and every documented answer matches its schema. Bounded: a few
examples per operation, the whole run in seconds."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from strongroom.config import Settings
from strongroom.server import create_app
from strongroom.server.guards import COOKIE
from strongroom.server.media_api import add_media_routes
from strongroom.server.metrics import add_metrics_routes
from strongroom.server.ops_api import add_ops_routes
from strongroom.server.ratelimit import add_ratelimit_routes
from strongroom.services.accounts import Accounts
from strongroom.services.media_views import MediaViews
from strongroom.services.metrics import Metrics
from strongroom.services.operations import server_operations
from strongroom.services.ratelimit import SignInLimiter
from tests.server.conftest import ADMIN_PASSWORD

EXAMPLES = 10
# what would end the run's own session (it is tested in test_api.py)
SKIP = {("DELETE", "/api/v1/session"), ("POST", "/api/v1/session"),
        ("PATCH", "/api/v1/users/{name}")}  # fmt: skip


@pytest.mark.parametrize("catalog_url", ["sqlite", "postgresql"], indirect=True)
def test_no_server_error_and_answers_match_the_schema(accounts: Accounts, tmp_path: Path) -> None:
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    catalog = accounts.catalog
    repo = str(tmp_path / "no-repository")
    ops, _loops = server_operations(catalog, repo, b"pw", worker="t")
    routers = [
        partial(add_ops_routes, ops=ops),
        partial(add_metrics_routes, snapshot=Metrics(catalog, repo, b"pw").snapshot),
        partial(add_ratelimit_routes, limiter=SignInLimiter(catalog)),
        partial(add_media_routes, views=MediaViews(catalog, Settings())),
    ]
    app = create_app(accounts, list, routers=routers)
    with TestClient(app) as client:
        body = {"name": "admin", "password": ADMIN_PASSWORD}
        signed = client.post("/api/v1/session", json=body)
        assert signed.status_code == 200
        cookies = {COOKIE: signed.cookies[COOKIE]}
        headers = {"X-CSRF-Token": signed.json()["csrf_token"]}
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    checked = 0
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples in every run: CI stays reproducible
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call(headers=headers, cookies=cookies)
            statuses.append(response.status_code)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        run()
        checked += 1
    assert checked >= 15
    assert 401 not in statuses  # signed in throughout
    assert sum(200 <= s < 300 for s in statuses) >= checked  # not only refusals
