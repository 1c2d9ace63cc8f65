"""An agent's RemoteStore against two in-process servers over one repository
and catalog: a server that dies mid-backup (the agent finishes through the
other, sending nothing twice), an agent killed mid-backup (the next run sends
only what was not acknowledged), and the intake's shared lock that keeps a
prune out while agents write."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from strongroom.errors import RepositoryLocked
from strongroom.remote.client import Client
from strongroom.remote.config import RepositoryInfo
from strongroom.remote.store import RemoteStore
from strongroom.server import create_app
from strongroom.server.agent_api import agent_routes
from strongroom.services import agent_intake
from strongroom.services.accounts import Accounts
from strongroom.services.agent_backup import backup_through_server, restore_through_server
from strongroom.services.agent_intake import Intake
from strongroom.services.agents import Agents
from strongroom.services.backup import BackupRequest
from strongroom.services.session import LockMode, open_repository
from tests.helpers.cli import PASSWORD
from tests.helpers.compare import walk_differences
from tests.server.agent_fixtures import Site, site  # noqa: F401 (fixture)


class Killed(Exception):
    """The agent process dies (not a network error: nothing retries it)."""


class Router(httpx.BaseTransport):
    """Routes requests to in-process apps by host; a host can die (connection
    refused from then on) after serving some uploads, or the agent itself."""

    def __init__(self, apps: dict[str, TestClient]) -> None:
        self.apps = apps
        self.uploads: dict[str, int] = dict.fromkeys(apps, 0)
        self.dies_after: dict[str, int] = {}
        self.agent_dies_after: int | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if self.uploads[host] >= self.dies_after.get(host, 1 << 30):
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "PUT":
            if self.agent_dies_after is not None and sum(self.uploads.values()) >= (
                self.agent_dies_after
            ):
                raise Killed()
            self.uploads[host] += 1
        transport: httpx.BaseTransport = self.apps[host]._transport
        return transport.handle_request(request)


@pytest.fixture
def pair(site: Site, accounts: Accounts) -> Iterator[tuple[Site, TestClient, dict[str, Any]]]:  # noqa: F811
    second = Intake(str(site.repo_path), PASSWORD.encode())
    app = create_app(accounts, lambda: [], routers=[agent_routes(Agents(accounts.catalog), second)])
    try:
        with TestClient(app, base_url="http://b") as b:
            yield site, b, site.enroll("fleet-1")
    finally:
        second.close()


def _store(router: Router, creds: dict[str, Any]) -> RemoteStore:
    bearer = f"{creds['agent_id']}.{creds['secret']}"
    client = Client(["http://a", "http://b"], bearer, http=httpx.Client(transport=router))
    return RemoteStore(client, RepositoryInfo.from_doc(creds["repository"]), batch_bytes=1)


def _files(root: Path, n: int) -> None:
    root.mkdir()
    for i in range(n):
        (root / f"f{i}").write_bytes(os.urandom(200_000))  # one chunk each


def test_a_server_dies_mid_backup_and_the_other_finishes_it(
    pair: tuple[Site, TestClient, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_intake, "REFRESH_SECONDS", 0.0)
    monkeypatch.setattr("strongroom.remote.client.BACKOFF", 0.01)
    a, b, creds = pair
    router = Router({"a": a.client, "b": b})
    router.dies_after["a"] = 3
    src = tmp_path / "src"
    _files(src, 6)
    store = _store(router, creds)
    result = backup_through_server(store, "fleet-1", BackupRequest(paths=[str(src)]))
    store.close()
    assert router.uploads["a"] == 3 and router.uploads["b"] >= 3
    assert store.traffic.missing == store.traffic.bundles  # nothing sent twice
    assert store.stats.chunks_added == store.traffic.bundles
    assert result.point is not None
    listed = b.get("/api/v1/agent/points", headers={"Authorization": f"Bearer "
                   f"{creds['agent_id']}.{creds['secret']}"}).json()  # fmt: skip
    assert [p["id"] for p in listed] == [result.point.id]
    target = tmp_path / "restored"
    reader = _store(Router({"a": a.client, "b": b}), creds)
    point, summary = restore_through_server(reader, result.point.id[:10], str(target))
    assert point.id == result.point.id and not summary.damaged
    assert reader.traffic.chunks_read >= 6 + 1
    # the 6 data chunks in one read (the listing and each tree: one request each);
    # a chunk another restore thread is fetching is waited for, not read twice
    assert reader.client.requests <= reader.traffic.chunks_read - 4
    restored = target / str(src).lstrip("/")
    assert walk_differences(src, restored, check_root=False, check_atime=False) == []


def test_an_interrupted_backup_resumes_without_resending(
    pair: tuple[Site, TestClient, dict[str, Any]], tmp_path: Path
) -> None:
    a, b, creds = pair
    src = tmp_path / "src"
    _files(src, 5)
    router = Router({"a": a.client, "b": b})
    router.agent_dies_after = 2
    with pytest.raises(Killed):
        backup_through_server(_store(router, creds), "fleet-1", BackupRequest(paths=[str(src)]))
    auth = {"Authorization": f"Bearer {creds['agent_id']}.{creds['secret']}"}
    assert a.client.get("/api/v1/agent/points", headers=auth).json() == []  # no half point
    # the intake holds a shared lock while agents write: no prune meanwhile
    with (
        open_repository(str(a.repo_path), PASSWORD.encode(), lock=LockMode.NONE) as repo,
        pytest.raises(RepositoryLocked),
    ):
        repo.lock(exclusive=True)

    again = _store(Router({"a": a.client, "b": b}), creds)
    result = backup_through_server(again, "fleet-1", BackupRequest(paths=[str(src)]))
    assert result.point is not None
    assert again.traffic.missing == again.traffic.asked - 2  # the two acknowledged: not sent
    assert again.traffic.bundles == again.traffic.missing


def test_a_no_change_backup_reads_the_parents_folders_in_batches(
    pair: tuple[Site, TestClient, dict[str, Any]], tmp_path: Path
) -> None:
    """The walk over the parent point loads every folder's tree: each folder's
    loading also fetches its siblings' trees, so requests follow the depth of
    the tree, not its folder count."""
    a, b, creds = pair
    src = tmp_path / "src"
    for i in range(12):
        for j in range(10):
            leaf = src / f"d{i}" / f"e{j}"
            leaf.mkdir(parents=True)
            (leaf / "f").write_bytes(b"%d %d\n" % (i, j))
    first = backup_through_server(
        _store(Router({"a": a.client, "b": b}), creds), "fleet-1", BackupRequest(paths=[str(src)])
    )
    assert first.point is not None
    store = _store(Router({"a": a.client, "b": b}), creds)
    again = backup_through_server(store, "fleet-1", BackupRequest(paths=[str(src)]))
    store.close()
    assert again.point is not None
    folders = 1 + 12 + 12 * 10  # src and below (and the path's own folders above it)
    assert store.traffic.chunks_read >= folders
    reads = store.client.requests - store.traffic.questions - store.traffic.bundles
    assert reads < folders // 4, (reads, folders)  # one read per folder before
