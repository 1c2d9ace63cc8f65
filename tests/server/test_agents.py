"""Agents over the HTTP API, in process, on SQLite and PostgreSQL catalogs:
enrollment (one-time, expiring), verified uploads, commits, reads, and the
append-only and separation guarantees."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from typing import Any

from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.repository import bundle
from strongroom.repository.compress import Compressor
from strongroom.repository.crypto import ChunkHasher
from strongroom.repository.format import BlobType
from strongroom.server.limits import LARGER_BODIES
from tests.server.agent_fixtures import Site, bearer, site  # noqa: F401 (fixture)

BUNDLE = "/api/v1/agent/chunks"


def _record(
    creds: dict[str, Any], data: bytes, blob_type: BlobType = BlobType.DATA
) -> bundle.Record:
    info = creds["repository"]
    cid = ChunkHasher(bytes.fromhex(info["id_key"]))(data)
    return bundle.Record(cid, blob_type, len(data), Compressor(3).pack(data))


def _point(host: str, tree: bytes, parent: str | None = None) -> dict[str, Any]:
    return RecoveryPoint(
        kind=PointKind.FILES, time=datetime.now(UTC), host=host, user="u", paths=["/x"],
        tree=tree.hex(), parent=parent,
    ).to_doc()  # fmt: skip


def _missing(where: Site, creds: dict[str, Any], ids: list[bytes]) -> list[str]:
    answer = where.client.post(
        "/api/v1/agent/chunks/missing", json={"ids": [i.hex() for i in ids]}, headers=bearer(creds)
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["missing"])


def test_enrollment_is_one_time_expires_and_gives_only_chunking_keys(site: Site) -> None:  # noqa: F811
    creds = site.enroll("web-1")
    assert creds["machine"] == "web-1" and len(creds["secret"]) >= 43
    info: dict[str, Any] = creds["repository"]  # type: ignore[assignment]
    assert set(info) == {
        "id", "id_key", "chunker_seed", "cdc_min", "cdc_avg", "cdc_max", "compression_level",
        "compression_mode", "block_size",
    }  # fmt: skip
    repo = site.intake.repo
    assert info["id_key"] == repo.master.id_key.hex()
    assert repo.master.encryption_key.hex() not in str(creds)
    # replayed, expired, made up: one answer
    token = site.token("web-2", expires_in=60)
    first = site.client.post("/api/v1/agent/enroll", json={"token": token})
    replay = site.client.post("/api/v1/agent/enroll", json={"token": token})
    expiring = site.token("web-3", expires_in=60)
    site.clock.advance(61)
    expired = site.client.post("/api/v1/agent/enroll", json={"token": expiring})
    bogus = site.client.post("/api/v1/agent/enroll", json={"token": "A" * 43})
    assert first.status_code == 200
    for answer in (replay, expired, bogus):
        assert answer.status_code == 401
        assert answer.json() == {"error": "invalid, used or expired enrollment token"}
    assert token not in replay.text and expiring not in expired.text
    for bad in ("../etc", "a/b", "x\u0000y", ".hidden", "x" * 65):
        refused = site.client.post("/api/v1/enrollments", json={"machine": bad},
                                   headers={"X-CSRF-Token": site.csrf})  # fmt: skip
        assert refused.status_code in (400, 422) and "error" in refused.json()
    assert site.client.post("/api/v1/enrollments", json={"machine": "nocsrf"}).status_code == 403
    # machines: listed and disabled by administrators; a disabled agent is refused
    names = [m["name"] for m in site.client.get("/api/v1/machines").json()]
    assert names == ["web-1", "web-2"]
    off = site.client.patch(
        "/api/v1/machines/web-1", json={"disabled": True}, headers={"X-CSRF-Token": site.csrf}
    )
    assert off.status_code == 200 and off.json()["disabled"] is True
    assert site.client.get("/api/v1/agent/points", headers=bearer(creds)).status_code == 401


def test_racing_enrollments_consume_a_token_once(site: Site) -> None:  # noqa: F811
    token = site.token("raced")
    codes: list[int] = []

    def enroll() -> None:
        codes.append(site.client.post("/api/v1/agent/enroll", json={"token": token}).status_code)

    threads = [threading.Thread(target=enroll) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [401] * 5


def test_uploads_are_verified_durable_and_committed_once(site: Site) -> None:  # noqa: F811
    creds: dict[str, Any] = site.enroll("db-1")
    good = _record(creds, b"good data " * 1000)
    tree = _record(creds, b"a tree chunk", BlobType.TREE)
    forged = bundle.Record(os.urandom(32), BlobType.DATA, 5, Compressor(3).pack(b"other"))
    assert _missing(site, creds, [good.chunk_id, forged.chunk_id]) == [
        good.chunk_id.hex(), forged.chunk_id.hex()
    ]  # fmt: skip
    refused = site.client.put(BUNDLE, content=bundle.encode([good, forged]), headers=bearer(creds))
    assert refused.status_code == 422
    assert forged.chunk_id.hex()[:16] in refused.json()["error"]
    assert len(_missing(site, creds, [good.chunk_id])) == 1  # nothing of it stored
    for bad in (b"", b"garbage", bundle.MAGIC + b"\xff\xff\xff\xff"):
        assert site.client.put(BUNDLE, content=bad, headers=bearer(creds)).status_code == 422
    big = site.client.put(BUNDLE, content=b"x" * (bundle.MAX_BUNDLE + 1), headers=bearer(creds))
    assert big.status_code == 413 and LARGER_BODIES[BUNDLE] == bundle.MAX_BUNDLE
    ok = site.client.put(BUNDLE, content=bundle.encode([good, tree]), headers=bearer(creds))
    assert ok.status_code == 200 and ok.json()["added"] == 2, ok.text
    assert _missing(site, creds, [good.chunk_id, tree.chunk_id]) == []
    resent = site.client.put(BUNDLE, content=bundle.encode([good]), headers=bearer(creds))
    assert resent.json()["added"] == 0  # stored once (a retry after a lost answer)
    # durable: a fresh session over the repository finds them
    from strongroom.services.session import LockMode, open_repository
    from tests.helpers.cli import PASSWORD

    with open_repository(str(site.repo_path), PASSWORD.encode(), lock=LockMode.NONE) as repo:
        assert repo.load_chunk(good.chunk_id) == b"good data " * 1000

    # commits: the host is the machine's; the tree must be stored; retried: one point
    post = site.client.post
    wrong_host = post("/api/v1/agent/points", json={"point": _point("other", tree.chunk_id),
                      "commit_id": "c" * 32}, headers=bearer(creds))  # fmt: skip
    no_tree = post("/api/v1/agent/points", json={"point": _point("db-1", os.urandom(32)),
                   "commit_id": "d" * 32}, headers=bearer(creds))  # fmt: skip
    assert wrong_host.status_code == 422 and no_tree.status_code == 422
    doc = {"point": _point("db-1", tree.chunk_id), "commit_id": "e" * 32}
    first = post("/api/v1/agent/points", json=doc, headers=bearer(creds))
    again = post("/api/v1/agent/points", json=doc, headers=bearer(creds))
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    mine = site.client.get("/api/v1/agent/points", headers=bearer(creds)).json()
    assert [p["id"] for p in mine] == [first.json()["id"]]

    # another machine sees none of it, and cannot build on it
    other: dict[str, Any] = site.enroll("db-2")
    assert site.client.get("/api/v1/agent/points", headers=bearer(other)).json() == []
    stolen = post("/api/v1/agent/points", json={
        "point": _point("db-2", tree.chunk_id, parent=first.json()["id"]),
        "commit_id": "f" * 32}, headers=bearer(other))  # fmt: skip
    assert stolen.status_code == 422 and "parent" in stolen.json()["error"]
    # reads answer a verified bundle of the named chunks
    read = post("/api/v1/agent/chunks/read", json={"chunks": [
        {"id": good.chunk_id.hex(), "type": 0}]}, headers=bearer(creds))  # fmt: skip
    assert read.status_code == 200
    [back] = bundle.parse(read.content)
    assert (
        bundle.verify(
            back, Compressor(3), ChunkHasher(bytes.fromhex(creds["repository"]["id_key"]))
        )
        == b"good data " * 1000
    )


AGENT_PATHS = [
    "/api/v1/agent/enroll", "/api/v1/agent/me", "/api/v1/agent/chunks",
    "/api/v1/agent/chunks/missing", "/api/v1/agent/chunks/read", "/api/v1/agent/points",
    "/api/v1/agent/points/" + "a" * 64, "/api/v1/agent/seeds", "/api/v1/agent/seeds/gold",
]  # fmt: skip


def test_agents_cannot_delete_rewrite_or_reach_user_endpoints(site: Site) -> None:  # noqa: F811
    creds: dict[str, Any] = site.enroll("app-1")
    auth = bearer(creds)
    request = site.client.request
    for path in AGENT_PATHS:
        for method in ("DELETE", "PATCH"):
            assert request(method, path, headers=auth).status_code in (404, 405), (method, path)
    assert request("PUT", "/api/v1/agent/points", headers=auth).status_code == 405
    # an agent's bearer is not a session; a session is not an agent
    from fastapi.testclient import TestClient

    bare = TestClient(site.client.app, base_url="http://testserver")
    for method, path in [("GET", "/api/v1/users"), ("POST", "/api/v1/enrollments"),
                         ("GET", "/api/v1/machines"), ("GET", "/api/v1/points"),
                         ("DELETE", "/api/v1/users/admin")]:  # fmt: skip
        assert bare.request(method, path, headers=auth).status_code == 401, path
    signed_in = site.client.get("/api/v1/agent/points")  # cookie only
    assert signed_in.status_code == 401
    assert site.client.get("/api/v1/agent/points", headers={"Authorization": "Bearer x.y"}
                           ).status_code == 401  # fmt: skip
    # the schema documents the agents' endpoints
    schema = site.client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/agent/chunks", "/api/v1/agent/points", "/api/v1/enrollments"} <= set(
        schema["paths"]
    )
    # no secret in the audit log
    app: Any = site.client.app
    rows = app.state.guards.accounts.catalog.list_audit(limit=1000)
    assert creds["secret"] not in str(rows)
