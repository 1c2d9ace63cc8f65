"""The dashboard's in-process tests: the application (create_app with the
dashboard's routes) over a real repository with one files point made by the
backup service, and a real SQLite catalog with three users, one per role.
Cheap argon2 parameters, so a sign-in costs milliseconds."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.catalog import Catalog
from strongroom.config import Settings
from strongroom.server import create_app
from strongroom.server.dashboard import add_dashboard_routes
from strongroom.services.accounts import Accounts, Role
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.dashboard import RepositoryView
from tests.conftest import init_local_repository, open_local_repository
from tests.helpers.cli import PASSWORD
from tests.server.conftest import ADMIN_PASSWORD, FAST_HASHER

OPERATOR_PASSWORD = "operator password 1"
READER_PASSWORD = "reader password 123"


def make_tree(root: Path) -> dict[str, bytes]:
    """A small tree; returns its files' contents by path relative to root."""
    files = {
        "a.txt": b"hello dashboard\n",
        "sub/b.bin": os.urandom(300_000),
        "sub/deep/c.txt": b"deep\n" * 100,
        "empty": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@dataclass
class Site:
    client: TestClient
    accounts: Accounts
    point: str
    source: Path  # the tree the point was made of
    files: dict[str, bytes]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    source = tmp_path / "src"
    files = make_tree(source)
    repo = open_local_repository(repo_path)
    try:
        result = backup_files(repo, BackupRequest(paths=[str(source)], host="web1"))
        assert result.point is not None
        point = result.point.id
    finally:
        repo.close()
    catalog = Catalog.open(str(tmp_path / "catalog.sqlite"))
    accounts = Accounts(catalog, hasher=FAST_HASHER)
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user("olga", OPERATOR_PASSWORD, Role.OPERATOR)
    accounts.create_user("rita", READER_PASSWORD, Role.READ_ONLY)
    view = RepositoryView(str(repo_path), PASSWORD.encode())
    dashboard = functools.partial(add_dashboard_routes, view=view, settings=Settings())
    app = create_app(accounts, lambda: [], routers=[dashboard])
    try:
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            yield Site(client, accounts, point, source, files)
    finally:
        catalog.close()


def sign_in(client: TestClient, name: str, password: str) -> str:
    """Signs in through the form; returns the session's CSRF token."""
    form = client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
    assert token is not None
    done = client.post(
        "/signin", data={"name": name, "password": password, "signin_token": token[1]}
    )
    assert done.status_code == 303 and done.headers["location"] == "/", done.text
    return str(client.get("/api/v1/me").json()["csrf_token"])


__all__ = ["ADMIN_PASSWORD", "OPERATOR_PASSWORD", "READER_PASSWORD", "Site", "sign_in"]
