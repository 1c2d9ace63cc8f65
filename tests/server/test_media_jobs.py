"""Media jobs run by the server, in process over a real repository made
with the CLI and a `virtual` library: `copy-to-media` queued through the
API writes points to a pool's cartridge, `restore-from-media` brings a
point that was forgotten and pruned back into the repository (restored
byte-exactly afterwards), hostile specs are 400, a read-only user 403,
and each step leaves its audit rows."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from strongroom.config import Settings
from strongroom.server import create_app
from strongroom.server.media_api import add_media_routes
from strongroom.server.ops_api import add_ops_routes
from strongroom.services.accounts import Accounts, Role
from strongroom.services.libraries import create_virtual_library
from strongroom.services.media_pools import create_pool, label_media, open_changer
from strongroom.services.media_views import MediaViews
from strongroom.services.operations import Operations, ServerLoops, server_operations
from strongroom.services.session import open_repository
from tests.conftest import PASSWORD, CliRunner
from tests.server.conftest import ADMIN_PASSWORD, sign_in

USER_PASSWORD = "operator password 1"

# the catalog's side of jobs runs on both backends in test_ops_api.py: one is enough here
pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)


@pytest.fixture
def ops(accounts: Accounts, repo_path: Path) -> tuple[Operations, ServerLoops]:
    return server_operations(
        accounts.catalog, str(repo_path), PASSWORD.encode(), worker="t1", settings=Settings()
    )


@pytest.fixture
def client(accounts: Accounts, ops: tuple[Operations, ServerLoops]) -> Iterator[TestClient]:
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user("op", USER_PASSWORD, Role.OPERATOR)
    accounts.create_user("ro", USER_PASSWORD, Role.READ_ONLY)
    views = MediaViews(accounts.catalog, Settings())
    routers = [partial(add_ops_routes, ops=ops[0]), partial(add_media_routes, views=views)]
    app = create_app(accounts, list, routers=routers)
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def _as(client: TestClient, name: str) -> dict[str, str]:
    return {"X-CSRF-Token": sign_in(client, name, USER_PASSWORD)}


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _run(client: TestClient, loops: ServerLoops, kind: str, spec: dict[str, Any]) -> Any:
    job = {"kind": kind, "spec": spec}
    answer = client.post("/api/v1/jobs", json=job, headers=_as(client, "op"))
    assert answer.status_code == 201, answer.text
    ran = loops.jobs.run_one(loops.worker)
    assert ran is not None and ran.id == answer.json()["id"]
    return client.get(f"/api/v1/jobs/{ran.id}").json()


def test_copy_to_media_then_bring_a_pruned_point_back_from_media(
    client: TestClient,
    ops: tuple[Operations, ServerLoops],
    accounts: Accounts,
    cli: CliRunner,
    tmp_path: Path,
    repo_path: Path,
) -> None:
    catalog, loops = accounts.catalog, ops[1]
    assert cli("init").rc == 0
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "b.txt").write_text("on media only\n" * 500)
    assert cli("backup", str(src)).rc == 0
    (point,) = [p["id"] for p in cli("snapshots", "--json").json()]
    create_virtual_library("vlib", slots=6, drives=1, import_export=1, cartridges=2)
    create_pool(catalog, "nightly", "7d", None)
    with open_repository(str(repo_path), PASSWORD.encode()) as repo:
        label_media(catalog, open_changer(Settings(), "vlib"), repo, "nightly", [], all_new=True)

    copied = _run(client, loops, "copy-to-media", {"pool": "nightly", "latest": True})
    assert copied["state"] == "done", copied
    assert copied["outcome"].startswith("copied 1 point(s) to pool nightly")
    placed = catalog.find_point(point)
    assert len(placed) == 1
    medium = catalog.get_medium(placed[0].media_id)
    assert medium.pool == "nightly" and medium.state.value == "appending"
    shown = {m["barcode"]: m["state"] for m in client.get("/api/v1/media").json()}
    assert shown[medium.barcode] == "appending"
    again = _run(client, loops, "copy-to-media", {"pool": "nightly", "points": [point[:12]]})
    assert again["state"] == "done" and again["outcome"].endswith("1 already there")

    assert cli("forget", point).rc == 0
    assert cli("prune").rc == 0
    back = _run(client, loops, "restore-from-media", {"point": point[:16]})
    assert back["state"] == "done", back
    assert back["outcome"].startswith(f"brought point {point[:8]} back from 1 cartridge(s)")
    assert ": 0 pack(s)" not in back["outcome"]  # the prune had removed its packs
    assert [p["id"] for p in cli("snapshots", "--json").json()] == [point]
    target = tmp_path / "restored"
    assert cli("restore", point, "--target", str(target)).rc == 0
    restored = next(p for p in target.rglob("a.bin")).parent
    assert _digests(restored) == _digests(src)
    twice = _run(client, loops, "restore-from-media", {"point": point})
    assert twice["outcome"] == f"point {point[:8]} is already in the repository"

    audit = [(a.action, a.outcome) for a in catalog.list_audit(limit=30)]
    assert audit.count(("job.create", "ok")) == 4
    assert ("job.copy-to-media", "ok") in audit and ("job.restore-from-media", "ok") in audit


def test_a_media_job_that_fails_raises_an_alert(
    client: TestClient, ops: tuple[Operations, ServerLoops], accounts: Accounts, cli: CliRunner
) -> None:
    assert cli("init").rc == 0
    failed = _run(client, ops[1], "restore-from-media", {"point": "ab" * 32})
    assert failed["state"] == "failed"
    assert failed["outcome"] == "point abababab is not in the media catalog"
    (event,) = [e for e in accounts.catalog.events_page(limit=5) if e.kind == "job.failed"]
    assert event.data["kind"] == "restore-from-media"


HOSTILE: list[tuple[str, object]] = [
    ("copy-to-media", {}),
    ("copy-to-media", {"pool": "nightly"}),  # neither points nor latest
    ("copy-to-media", {"pool": "nightly", "latest": True, "points": ["ab" * 32]}),
    ("copy-to-media", {"pool": "../etc", "latest": True}),
    ("copy-to-media", {"pool": "a/b", "latest": True}),
    ("copy-to-media", {"pool": "x" * 200, "latest": True}),
    ("copy-to-media", {"pool": "p", "points": ["ab" * 32] * 300}),
    ("copy-to-media", {"pool": "p", "points": ["not-hex!"]}),
    ("copy-to-media", {"pool": "p", "points": [7]}),
    ("copy-to-media", {"pool": "p", "latest": "yes"}),
    ("copy-to-media", {"pool": "p", "latest": True, "library": ".."}),
    ("copy-to-media", {"pool": "p", "latest": True, "paths": ["a\0b"]}),
    ("copy-to-media", {"pool": "p", "latest": True, "rm": 1}),
    ("restore-from-media", {}),
    ("restore-from-media", {"point": "abc"}),
    ("restore-from-media", {"point": "../../" + "a" * 60}),
    ("restore-from-media", {"point": "AB" * 32}),
    ("restore-from-media", {"point": "ab" * 32, "target": "/tmp"}),
]


def test_hostile_specs_are_400_and_a_read_only_user_is_403(
    client: TestClient, accounts: Accounts
) -> None:
    headers = _as(client, "op")
    for kind, spec in HOSTILE:
        answer = client.post("/api/v1/jobs", json={"kind": kind, "spec": spec}, headers=headers)
        assert answer.status_code == 400, (kind, spec, answer.text)
        assert "etc" not in answer.json()["error"] and "\0" not in answer.json()["error"]
    on_machine = {"kind": "copy-to-media", "spec": {"pool": "p", "latest": True}, "machine": "m1"}
    assert client.post("/api/v1/jobs", json=on_machine, headers=headers).status_code == 400
    assert client.get("/api/v1/jobs").json() == []
    ro = _as(client, "ro")
    good = {"kind": "copy-to-media", "spec": {"pool": "p", "latest": True}}
    assert client.post("/api/v1/jobs", json=good, headers=ro).status_code == 403
    assert accounts.catalog.list_audit(limit=1)[0].outcome == "denied"
    schedule = {"name": "nightly-tape", "kind": "copy-to-media", "every": 86400,
                "spec": {"pool": "p", "latest": True}}  # fmt: skip
    admin = {"X-CSRF-Token": sign_in(client, "admin", ADMIN_PASSWORD)}
    made = client.post("/api/v1/schedules", json=schedule, headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["spec"]["latest"] is True
