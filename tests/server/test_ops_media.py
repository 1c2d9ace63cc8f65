"""Media libraries over the API, over a `virtual` library and a real
catalog (SQLite and PostgreSQL): inventories from the API, the library's
slots, drives and media with barcodes and states, and who may do what."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
from fastapi.testclient import TestClient

from strongroom.config import Settings
from strongroom.server import create_app
from strongroom.server.media_api import add_media_routes
from strongroom.services.accounts import Accounts, Role
from strongroom.services.libraries import create_virtual_library, export_cartridges
from strongroom.services.media_views import MediaViews
from tests.server.conftest import ADMIN_PASSWORD, sign_in

PASSWORD = "operator password 1"


@pytest.fixture
def client(accounts: Accounts) -> Iterator[TestClient]:
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user("op", PASSWORD, Role.OPERATOR)
    accounts.create_user("ro", PASSWORD, Role.READ_ONLY)
    create_virtual_library("vlib", slots=6, drives=1, import_export=1, cartridges=3)
    views = MediaViews(accounts.catalog, Settings())
    app = create_app(accounts, list, routers=[partial(add_media_routes, views=views)])
    with TestClient(app) as c:
        yield c


def test_inventory_and_the_library_over_the_api(client: TestClient, accounts: Accounts) -> None:
    headers = {"X-CSRF-Token": sign_in(client, "op", PASSWORD)}
    assert client.get("/api/v1/libraries").json() == []
    assert client.get("/api/v1/libraries/vlib").status_code == 404  # not inventoried yet
    read = client.post("/api/v1/libraries/vlib/inventory", json={"detailed": True}, headers=headers)
    assert read.status_code == 200, read.text
    assert sorted(read.json()["new"]) == ["VT0001L8", "VT0002L8", "VT0003L8"]
    assert len(read.json()["detailed"]) == 3
    (listed,) = client.get("/api/v1/libraries").json()
    assert listed == {"name": "vlib", "kind": "virtual", "media": 3, "online": 3, "drives": 1}
    lib = client.get("/api/v1/libraries/vlib").json()
    assert [(s["slot"], s["barcode"]) for s in lib["slots"]] == [
        (1, "VT0001L8"), (2, "VT0002L8"), (3, "VT0003L8"),
    ]  # fmt: skip
    assert {s["state"] for s in lib["slots"]} == {"blank"}
    assert [d["address"] for d in lib["drives"]] == [0]
    assert {m["barcode"] for m in lib["media"]} == {"VT0001L8", "VT0002L8", "VT0003L8"}

    export_cartridges("vlib", Settings(), ["VT0002L8"])
    fast = client.post("/api/v1/libraries/vlib/inventory", json={}, headers=headers)
    assert fast.status_code == 200 and fast.json()["went_offline"] == ["VT0002L8"]
    assert fast.json()["detailed"] == []
    media = {m["barcode"]: m["online"] for m in client.get("/api/v1/media").json()}
    assert media == {"VT0001L8": True, "VT0002L8": False, "VT0003L8": True}
    rows = [(a.action, a.outcome) for a in accounts.catalog.list_audit(limit=5)]
    assert rows.count(("library.inventory", "ok")) == 2


def test_unknown_and_hostile_library_names(client: TestClient) -> None:
    headers = {"X-CSRF-Token": sign_in(client, "op", PASSWORD)}
    for name in ("nope", "..", "a..b", "%2e%2e", "x" * 200):
        answer = client.post(f"/api/v1/libraries/{name}/inventory", json={}, headers=headers)
        assert answer.status_code in (404, 422), (name, answer.text)
        assert client.get(f"/api/v1/libraries/{name}").status_code in (404, 422)


def test_a_read_only_user_may_look_but_not_run_an_inventory(
    client: TestClient, accounts: Accounts
) -> None:
    headers = {"X-CSRF-Token": sign_in(client, "ro", PASSWORD)}
    answer = client.post("/api/v1/libraries/vlib/inventory", json={}, headers=headers)
    assert answer.status_code == 403
    assert client.get("/api/v1/libraries").status_code == 200
    assert client.get("/api/v1/media").status_code == 200
    assert accounts.catalog.list_audit(limit=1)[0].outcome == "denied"
    client.cookies.clear()
    for path in ("/api/v1/libraries", "/api/v1/libraries/vlib", "/api/v1/media"):
        assert client.get(path).status_code == 401
