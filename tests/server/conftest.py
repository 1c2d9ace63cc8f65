"""The server's tests: the API in process (FastAPI's TestClient) over a real
catalog, on SQLite and on PostgreSQL (tests/catalog/conftest.py's fixtures),
with cheap argon2 parameters so that each sign-in costs milliseconds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from strongroom.server import create_app
from strongroom.services.accounts import Accounts, Role
from tests.catalog.conftest import catalog_url, pg_cluster  # noqa: F401 (fixtures)

ADMIN_PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def accounts(catalog_url: str) -> Iterator[Accounts]:  # noqa: F811
    from strongroom.catalog import Catalog

    catalog = Catalog.open(catalog_url)
    try:
        yield Accounts(catalog, hasher=FAST_HASHER)
    finally:
        catalog.close()


@pytest.fixture
def points() -> list[dict[str, Any]]:
    return [{"id": "ab" * 32, "host": "h"}]


def make_client(
    accounts: Accounts, points: Callable[[], list[dict[str, Any]]], **kw: Any
) -> TestClient:
    return TestClient(create_app(accounts, points, **kw), base_url="http://testserver")


@pytest.fixture
def client(accounts: Accounts, points: list[dict[str, Any]]) -> Iterator[TestClient]:
    created = accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    assert created == ("admin", None)
    with make_client(accounts, lambda: points) as c:
        yield c


def sign_in(client: TestClient, name: str, password: str) -> str:
    """Signs in; returns the CSRF token."""
    answer = client.post("/api/v1/session", json={"name": name, "password": password})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["csrf_token"])


__all__ = ["ADMIN_PASSWORD", "Role", "make_client", "sign_in"]
