"""The intake's `read` for agents: chunks sent as stored (compressed,
authenticated), in order, read in parallel with neighbours of one pack in
one ranged GET; the same plaintexts as `load_chunk`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import ChunkNotFound, IntegrityError
from strongroom.repository import bundle
from strongroom.repository.format import BlobType, pack_name
from strongroom.services.agent_intake import Intake
from tests.conftest import init_local_repository, open_local_repository
from tests.helpers.cli import PASSWORD


@pytest.fixture
def stored(
    tmp_path: Path,
) -> Iterator[tuple[Intake, list[tuple[bytes, BlobType]], dict[bytes, bytes]]]:
    init_local_repository(tmp_path)
    repo = open_local_repository(tmp_path)
    plain: dict[bytes, bytes] = {}
    wanted: list[tuple[bytes, BlobType]] = []
    for n in range(30):  # data and trees, compressible and not: several packs
        data = os.urandom(3000) if n % 3 else b"tree %d " % n * 500
        blob_type = BlobType.TREE if n % 4 == 0 else BlobType.DATA
        cid = repo.put_chunk(blob_type, data)
        plain[cid] = data
        wanted.append((cid, blob_type))
        if n == 14:
            repo.flush()  # a second pair of packs
    repo.flush()
    repo.close()
    intake = Intake(str(tmp_path), PASSWORD.encode())
    try:
        yield intake, wanted, plain
    finally:
        intake.close()


def test_read_sends_what_load_chunk_reads_in_order_with_few_gets(
    stored: tuple[Intake, list[tuple[bytes, BlobType]], dict[bytes, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake, wanted, plain = stored
    backend = intake.repo.backend
    gets: list[tuple[str, int]] = []
    real_get_range = backend.get_range

    def counting(name: str, offset: int, length: int) -> bytes:
        gets.append((name, length))
        return real_get_range(name, offset, length)

    monkeypatch.setattr(backend, "get_range", counting)
    order = wanted[::2][::-1] + wanted[1::2]  # any order
    records = bundle.parse(intake.read(order))
    assert [(r.chunk_id, r.blob_type) for r in records] == order
    for r in records:  # the agent's check: decompresses to its size and hashes to its id
        data = bundle.verify(r, intake.repo.compressor, intake.repo.chunk_id)
        assert data == plain[r.chunk_id] == intake.repo.load_chunk(r.chunk_id, r.blob_type)
    packs = {intake.repo.locate(cid).pack for cid, _ in wanted}
    assert len(packs) == 4  # data and tree packs, two flushes
    assert len(gets) - len(records) == len(packs)  # one GET a pack (then load_chunk's own)


def test_read_stops_at_a_full_bundle_and_names_an_absent_or_damaged_chunk(
    stored: tuple[Intake, list[tuple[bytes, BlobType]], dict[bytes, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake, wanted, plain = stored
    # the bound by sealed sizes: 3 data chunks of 3,000 random bytes exceed 8 KB
    monkeypatch.setattr(bundle, "MAX_BUNDLE", 8_000)
    first_data = [w for w in wanted if w[1] is BlobType.DATA and len(plain[w[0]]) == 3000][:3]
    blob = intake.read(first_data)
    monkeypatch.undo()
    assert [r.chunk_id for r in bundle.parse(blob)] == [c for c, _ in first_data[:2]]
    absent = os.urandom(32)
    with pytest.raises(ChunkNotFound):
        intake.read([wanted[0], (absent, BlobType.DATA)])
    cid, blob_type = wanted[1]
    loc = intake.repo.locate(cid)
    pack = Path(intake.repo.backend.location) / pack_name(loc.pack.hex())
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + 20] ^= 1
    pack.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        intake.read([(cid, blob_type)])


def test_points_reads_each_point_object_once(
    stored: tuple[Intake, list[tuple[bytes, BlobType]], dict[bytes, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake, wanted, _plain = stored
    tree = next(cid for cid, t in wanted if t is BlobType.TREE)

    def point(host: str, hour: int) -> str:
        return intake.repo.save_point(
            {"version": 1, "kind": "files", "time": f"2026-01-01T{hour:02}:00:00+00:00",
             "host": host, "paths": ["/src"], "tree": tree.hex()}
        )  # fmt: skip

    a1, _b, a2 = point("a", 2), point("b", 1), point("a", 1)
    reads: list[str] = []
    real_load = intake.repo.load_point

    def counting(point_hex: str) -> dict[str, object]:
        reads.append(point_hex)
        return real_load(point_hex)

    monkeypatch.setattr(intake.repo, "load_point", counting)
    assert [p["id"] for p in intake.points("a")] == [a2, a1]  # oldest first, a's only
    assert len(reads) == 3
    a3 = point("a", 3)
    assert [p["id"] for p in intake.points("a")] == [a2, a1, a3]
    assert len(reads) == 4  # only the new one read
    intake.repo.delete_point(a1)  # forgotten: gone from the answer
    assert [p["id"] for p in intake.points("a")] == [a2, a3] and len(reads) == 4
