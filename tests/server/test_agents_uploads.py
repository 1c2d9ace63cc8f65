"""The agent's upload path (remote/store.py) through an in-process server:
a chunk the server holds is neither compressed nor sent again, by any
machine, and what is sent still restores byte for byte."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.remote.client import Client
from strongroom.remote.config import RepositoryInfo
from strongroom.remote.store import RemoteStore
from strongroom.repository import bundle
from strongroom.repository.compress import Compressor
from strongroom.services.agent_backup import backup_through_server, restore_through_server
from strongroom.services.backup import BackupRequest
from tests.helpers.compare import walk_differences
from tests.server.agent_fixtures import Site, site  # noqa: F401 (fixture)


@pytest.fixture
def catalog_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLite only: the catalog plays no part in the upload path."""
    monkeypatch.delenv("STRONGROOM_CATALOG", raising=False)
    return str(tmp_path / "catalog.sqlite")


class Uploads(httpx.BaseTransport):
    """Forwards to the in-process app; keeps the ids of every uploaded record."""

    def __init__(self, at: Site) -> None:
        self.inner: httpx.BaseTransport = at.client._transport
        self.ids: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.ids += [r.chunk_id for r in bundle.parse(request.read())]
        return self.inner.handle_request(request)


def _store(at: Site, creds: dict[str, Any], uploads: Uploads) -> RemoteStore:
    client = Client(
        ["http://testserver"],
        f"{creds['agent_id']}.{creds['secret']}",
        http=httpx.Client(transport=uploads),
    )
    # small batches: several in flight on both upload threads
    return RemoteStore(client, RepositoryInfo.from_doc(creds["repository"]), batch_bytes=64 << 10)


def _tree(root: Path, names: list[str], seed: int) -> None:
    root.mkdir()
    for n, name in enumerate(names):
        (root / name).write_bytes(os.urandom(1) * 100 + bytes(range(256)) * (600 + seed + n))


def test_a_chunk_the_server_holds_is_neither_compressed_nor_sent(
    site: Site,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    shared = [f"shared{i}" for i in range(6)]
    _tree(first, shared, 0)
    second.mkdir()
    for name in shared:  # the same content on another machine, under another path
        (second / name).write_bytes((first / name).read_bytes())
    (second / "new").write_bytes(os.urandom(200_000))
    packed: list[int] = []
    real_pack = Compressor.pack

    def counting(self: Compressor, data: bytes | bytearray | memoryview) -> bytes:
        packed.append(len(data))
        return real_pack(self, data)

    monkeypatch.setattr(Compressor, "pack", counting)

    a_up = Uploads(site)
    a = _store(site, site.enroll("pc-a"), a_up)
    try:
        backup_through_server(a, "pc-a", BackupRequest(paths=[str(first)]))
    finally:
        a.close()
    assert a.traffic.compressed >= len(shared)  # the first machine compressed them
    packed.clear()

    creds = site.enroll("pc-b")
    b_up = Uploads(site)
    b = _store(site, creds, b_up)
    try:
        result = backup_through_server(b, "pc-b", BackupRequest(paths=[str(second)]))
    finally:
        b.close()
    # nothing the first machine stored went up again, and only the new
    # file's bytes (and the few small trees) were compressed
    assert not set(b_up.ids) & set(a_up.ids)
    assert b.traffic.missing == len(b_up.ids) == len(set(b_up.ids))
    shared_bytes = sum((first / n).stat().st_size for n in shared)
    assert 200_000 <= sum(packed) < 220_000 < shared_bytes
    assert 1 <= b.traffic.compressed <= 200_000 // (16 << 10) + 1

    out = tmp_path / "out"
    reader = _store(site, creds, Uploads(site))
    try:
        assert result.point is not None
        restore_through_server(reader, result.point.id, str(out))
    finally:
        reader.close()
    assert walk_differences(second, out / str(second).lstrip("/"), check_root=False,
                            check_atime=False) == []  # fmt: skip
