"""Block image points through the server, in process (two servers over one
repository and catalog, SQLite and PostgreSQL): a raw image with holes and a
repeated block backed up and restored byte-exactly, an incremental that
sends only the changed blocks and map chunks, a VHD export, and forged
image points refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.model.blockmap import SEGMENT_BLOCKS
from strongroom.model.point import RecoveryPoint
from strongroom.remote.client import Client
from strongroom.remote.config import RepositoryInfo
from strongroom.remote.store import RemoteStore
from strongroom.repository.format import BlobType
from strongroom.services.agent_images import (
    backup_image_through_server,
    export_image_through_server,
    restore_image_through_server,
)
from strongroom.services.image_backup import ImageBackupRequest, ImageBackupResult
from strongroom.sources.vhd import VhdSource
from tests.server.agent_fixtures import Site, bearer, site  # noqa: F401 (fixture)
from tests.server.test_agents_resume import Router, pair  # noqa: F401 (fixture)

BS = 64 << 10
BLOCKS = 64  # a 4 MiB image


def _store(router: Router, creds: dict[str, Any]) -> RemoteStore:
    bearer_text = f"{creds['agent_id']}.{creds['secret']}"
    client = Client(["http://a", "http://b"], bearer_text, http=httpx.Client(transport=router))
    return RemoteStore(client, RepositoryInfo.from_doc(creds["repository"]), batch_bytes=BS * 8)


def _image(path: Path) -> None:
    """Blocks 0-19 random, 20-39 a hole, 40 and 41 equal, 42-49 zeros written
    (a hole in the map), 50-63 random."""
    same = os.urandom(BS)
    with path.open("wb") as f:
        f.truncate(BLOCKS * BS)
        f.write(os.urandom(20 * BS))
        f.seek(40 * BS)
        f.write(same + same + bytes(8 * BS) + os.urandom(14 * BS))


@dataclass
class Agent:
    a: Site
    b: TestClient
    creds: dict[str, Any]
    router: Router

    def store(self, creds: dict[str, Any] | None = None) -> RemoteStore:
        return _store(self.router, creds or self.creds)

    def backup(self, image: Path, creds: dict[str, Any] | None = None) -> tuple[
        ImageBackupResult, RemoteStore
    ]:  # fmt: skip
        store = self.store(creds)
        machine = (creds or self.creds)["machine"]
        req = ImageBackupRequest(str(image), block_size=BS, image_format="raw")
        try:
            return backup_image_through_server(store, machine, req), store
        finally:
            store.close()

    def commit(self, doc: dict[str, Any], creds: dict[str, Any] | None = None) -> httpx.Response:
        return self.a.client.post(
            "/api/v1/agent/points",
            json={"point": doc, "commit_id": os.urandom(16).hex()},
            headers=bearer(creds or self.creds),
        )


@pytest.fixture
def agent(pair: tuple[Site, TestClient, dict[str, Any]]) -> Iterator[Agent]:  # noqa: F811
    a, b, creds = pair
    yield Agent(a, b, creds, Router({"a": a.client, "b": b}))


def test_an_image_and_its_incremental_go_through_the_server(agent: Agent, tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    _image(image)
    first, store = agent.backup(image)
    s = first.summary
    assert first.point.host == "fleet-1" and s.blocks == BLOCKS
    assert s.holes == 20 + 8
    # 35 distinct data blocks (40 and 41 are one chunk) + one segment + the root
    assert store.traffic.missing == 35 + 2
    assert store.stats.chunks_added == 35 + 2

    target = tmp_path / "restored.raw"
    reader = agent.store()
    point, summary = restore_image_through_server(reader, first.point.id[:12], str(target))
    assert point.id == first.point.id and not summary.damaged
    assert target.read_bytes() == image.read_bytes()
    assert reader.client.requests < 35 // 2  # blocks fetched ahead in batches

    with image.open("r+b") as f:  # two blocks change
        f.seek(3 * BS)
        f.write(os.urandom(BS))
        f.seek(55 * BS + 100)
        f.write(b"changed")
    second, store = agent.backup(image)
    assert second.point.parent == first.point.id
    assert second.summary.tracker == "compare" and second.summary.blocks_changed == 2
    assert second.summary.blocks_read == 64 - 20  # reads all but the holes it is told of
    assert store.traffic.asked == 2 + 2 and store.traffic.missing == 2 + 2  # + segment, root
    assert store.stats.chunks_added == 4

    again = tmp_path / "again.raw"
    reader = agent.store()
    restore_image_through_server(reader, "latest", str(again))
    assert again.read_bytes() == image.read_bytes()
    vhd = tmp_path / "disk.vhd"
    _, (exported,) = export_image_through_server(agent.store(), "latest", vhd)
    assert exported.path == str(vhd)
    exported = VhdSource(str(vhd))
    try:
        assert b"".join(bytes(d) for _, d in exported.read_blocks([(0, exported.size)])) == (
            image.read_bytes()
        )
    finally:
        exported.close()


def _root(size: int, block_size: int, segments: list[bytes | None]) -> bytes:
    doc = {"v": 1, "size": size, "block_size": block_size, "segment_blocks": SEGMENT_BLOCKS,
           "segments": segments}  # fmt: skip
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def test_forged_image_points_are_refused(agent: Agent, tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    _image(image)
    mine, _ = agent.backup(image)
    other = agent.a.enroll("fleet-2")
    theirs, _ = agent.backup(image, other)
    store = agent.store()
    segment = os.urandom(32) * BLOCKS  # names chunks nobody stored
    seg_id = store.put_chunk(BlobType.TREE, segment)
    forged = {
        "unstored segment": _root(BLOCKS * BS, BS, [os.urandom(32)]),
        "unstored data": _root(BLOCKS * BS, BS, [seg_id]),
        "block size": _root(BLOCKS * BS, 3000, [None]),
        "negative size": _root(-1, BS, []),
        "segment count": _root(BLOCKS * BS, BS, [None, None]),
        "absurd size": _root(1 << 55, 1 << 26, [None] * ((1 << 29) // SEGMENT_BLOCKS)),
    }
    roots = {why: store.put_chunk(BlobType.TREE, blob) for why, blob in forged.items()}
    store.flush()
    store.close()
    base = mine.point.to_doc()
    for why, root in roots.items():
        answer = agent.commit({**base, "tree": root.hex(), "parent": None})
        assert answer.status_code == 422, why
        assert "block map" in answer.json()["error"], (why, answer.text)
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "tree": os.urandom(32).hex()}, "block map is not stored"),
        ({**base, "parent": theirs.point.id}, "not a point of this machine"),
        ({**base, "parent": mine.point.id, "paths": ["/elsewhere"]}, "of the same source"),
        (  # an overlay names a backing image other than the one the parent read
            {
                **base,
                "parent": mine.point.id,
                "paths": ["/elsewhere"],
                "lineage": {**base["lineage"], "backing_chain": ["/x.qcow2:1:2"]},
            },
            "of the same source",
        ),
        ({**base, "host": "fleet-2"}, "host is not this machine"),
        ({**base, "seeds": {"used": [], "classes": {}, "root": "/", "lacks": None}}, "no seed"),
        ({**base, "paths": ["/a", "/b"]}, "names one source"),
        ({**base, "kind": "files", "paths": ["/x"]}, "files point names no lineage"),
        ({**base, "kind": "vm"}, "in no cluster: it commits no VM point"),
    ]
    for doc, why in cases:
        answer = agent.commit(doc)
        assert answer.status_code == 422 and why in answer.json()["error"], (why, answer.text)
    listed = agent.a.client.get("/api/v1/agent/points", headers=bearer(agent.creds)).json()
    assert [p["id"] for p in listed] == [mine.point.id]  # nothing forged was saved
    assert RecoveryPoint.from_doc(listed[0]).lineage is not None  # the agent's lineage kept


def test_any_block_map_root_gets_a_clear_answer(agent: Agent, tmp_path: Path) -> None:
    """Hostile roots (any version, geometry, segment list) are refused with
    422 or, when they are a well-formed map of holes, committed: never a 5xx."""
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(BS))
    mine, _ = agent.backup(image)
    base = {**mine.point.to_doc(), "parent": None}
    store = agent.store()
    roots = st.fixed_dictionaries(
        {
            "v": st.integers(-1, 3),
            "size": st.one_of(st.integers(-5, 3 * BS), st.integers(0, 1 << 62)),
            "block_size": st.one_of(
                st.sampled_from([0, 3000, BS, 1 << 27]), st.integers(-(1 << 63), (1 << 64) - 1)
            ),
            "segment_blocks": st.sampled_from([0, 1, SEGMENT_BLOCKS, 1 << 25]),
            "segments": st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=3),
        }
    )

    @settings(max_examples=25, deadline=None, database=None)
    @given(doc=roots)
    def commit_root(doc: dict[str, Any]) -> None:
        root = store.put_chunk(BlobType.TREE, msgpack.packb(doc, use_bin_type=True))
        store.flush()
        answer = agent.commit({**base, "tree": root.hex()})
        assert answer.status_code in (201, 422), answer.text

    try:
        commit_root()
    finally:
        store.close()
