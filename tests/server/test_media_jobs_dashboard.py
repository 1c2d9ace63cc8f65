"""The dashboard's media actions in process, over a real repository (one
files point), a real SQLite catalog and a `virtual` library with a
labelled pool: "Copy to media" from the libraries page and from a point's
page queue checked jobs the server's runner then runs; a point forgotten
from the repository shows on the libraries page as on media only, and
"Bring back from media" returns it; a read-only user sees no form and is
refused (403); a hostile pool is 400; every attempt is an audit row."""

from __future__ import annotations

import functools
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
from strongroom.services.libraries import create_virtual_library
from strongroom.services.media_pools import create_pool, label_media, open_changer
from strongroom.services.operations import ServerLoops, server_operations
from tests.conftest import init_local_repository, open_local_repository
from tests.helpers.cli import PASSWORD
from tests.server.conftest import FAST_HASHER
from tests.server.dashboard.conftest import (
    ADMIN_PASSWORD,
    OPERATOR_PASSWORD,
    READER_PASSWORD,
    make_tree,
    sign_in,
)


@dataclass
class MediaSite:
    client: TestClient
    catalog: Catalog
    loops: ServerLoops
    repo_path: Path
    point: str


@pytest.fixture
def msite(tmp_path: Path) -> Iterator[MediaSite]:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    source = tmp_path / "src"
    make_tree(source)
    catalog = Catalog.open(str(tmp_path / "catalog.sqlite"))
    create_virtual_library("vlib", slots=4, drives=1, import_export=1, cartridges=1)
    create_pool(catalog, "nightly", "7d", None)
    repo = open_local_repository(repo_path)
    try:
        made = backup_files(repo, BackupRequest(paths=[str(source)], host="web1"))
        assert made.point is not None
        label_media(catalog, open_changer(Settings(), "vlib"), repo, "nightly", [], all_new=True)
    finally:
        repo.close()
    accounts = Accounts(catalog, hasher=FAST_HASHER)
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user("olga", OPERATOR_PASSWORD, Role.OPERATOR)
    accounts.create_user("rita", READER_PASSWORD, Role.READ_ONLY)
    view = RepositoryView(str(repo_path), PASSWORD.encode(), ttl=0)
    dashboard = functools.partial(add_dashboard_routes, view=view, settings=Settings())
    app = create_app(accounts, lambda: [], routers=[dashboard])
    _ops, loops = server_operations(catalog, str(repo_path), PASSWORD.encode(), worker="t1")
    try:
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            yield MediaSite(client, catalog, loops, repo_path, made.point.id)
    finally:
        catalog.close()


def _run(site: MediaSite, kind: str) -> str:
    ran = site.loops.jobs.run_one(site.loops.worker)
    assert ran is not None and ran.kind == kind
    assert ran.state.value == "done", ran.outcome
    return str(ran.outcome)


def test_copy_to_media_and_bring_back_from_the_dashboard(msite: MediaSite) -> None:
    client, catalog = msite.client, msite.catalog
    csrf = sign_in(client, "olga", OPERATOR_PASSWORD)
    page = client.get("/libraries")
    assert page.status_code == 200 and 'id="copy-to-media"' in page.text
    assert '<option value="nightly">' in page.text and "bring-back" not in page.text
    sent = client.post("/media/copy", data={"csrf_token": csrf, "pool": "nightly",
                                            "which": "latest"})  # fmt: skip
    assert sent.status_code == 303 and sent.headers["location"] == "/libraries"
    (job,) = catalog.list_jobs(kind="copy-to-media", limit=5)
    assert job.spec["latest"] is True and job.spec["pool"] == "nightly"
    assert _run(msite, "copy-to-media").startswith("copied 1 point(s) to pool nightly")

    point_page = client.get(f"/points/{msite.point}")
    assert 'id="copy-point-to-media"' in point_page.text
    form = {"csrf_token": csrf, "pool": "nightly", "which": "points", "points": msite.point}
    assert client.post("/media/copy", data=form).status_code == 303
    assert catalog.list_jobs(kind="copy-to-media", limit=1)[0].spec["points"] == [msite.point]
    assert _run(msite, "copy-to-media").endswith("1 already there")

    repo = open_local_repository(msite.repo_path)
    try:
        repo.delete_point(msite.point)
    finally:
        repo.close()
    page = client.get("/libraries")
    assert f'data-point="{msite.point}"' in page.text and "Bring back from media" in page.text
    back = client.post("/media/bring-back", data={"csrf_token": csrf, "point": msite.point})
    assert back.status_code == 303
    assert _run(msite, "restore-from-media").startswith(f"brought point {msite.point[:8]}")
    assert client.get(f"/points/{msite.point}").status_code == 200
    assert f'data-point="{msite.point}"' not in client.get("/libraries").text

    bad = client.post("/media/copy", data={"csrf_token": csrf, "pool": "../x", "which": "latest"})
    assert bad.status_code == 400
    rows = [(a.action, a.target, a.outcome) for a in catalog.list_audit(limit=10)]
    assert ("job.create", "copy-to-media", "failed") in rows
    assert sum(1 for r in rows if r[0] == "job.create" and r[2] == "ok") == 3


def test_a_reader_sees_no_media_forms_and_is_refused(msite: MediaSite) -> None:
    client = msite.client
    csrf = sign_in(client, "rita", READER_PASSWORD)
    assert "copy-to-media" not in client.get("/libraries").text
    assert "copy-point-to-media" not in client.get(f"/points/{msite.point}").text
    form = {"csrf_token": csrf, "pool": "nightly", "which": "latest"}
    assert client.post("/media/copy", data=form).status_code == 403
    back = {"csrf_token": csrf, "point": msite.point}
    assert client.post("/media/bring-back", data=back).status_code == 403
    assert msite.catalog.list_jobs(limit=5) == []
    assert msite.catalog.list_audit(limit=1)[0].outcome == "denied"
