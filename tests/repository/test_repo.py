"""The repository facade, in process: init/open, chunks, packs, index files, points, keys."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from strongroom.errors import (
    ChunkNotFound,
    IntegrityError,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
    TransientStorageError,
    UnsupportedVersion,
    WrongPassword,
)
from strongroom.repository import format as fmt
from strongroom.repository.format import BlobType
from strongroom.repository.pack import read_pack_header
from strongroom.repository.repo import RepoConfig, Repository
from strongroom.storage.local import LocalBackend
from strongroom.storage.memory import MemoryBackend
from tests.helpers.cli import PASSWORD

PW = PASSWORD.encode()


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        return MemoryBackend()
    return LocalBackend(tmp_path / "repo")


def test_init_then_open(backend) -> None:  # type: ignore[no-untyped-def]
    created = Repository.init(backend, PW)
    opened = Repository.open(backend, PW)
    assert opened.config == created.config
    assert opened.master == created.master
    assert opened.key_name == created.key_name
    assert backend.exists("config")
    assert [o.name for o in backend.list("keys/")] == [created.key_name]


def test_init_refuses_an_existing_repository(backend) -> None:  # type: ignore[no-untyped-def]
    Repository.init(backend, PW)
    with pytest.raises(RepositoryExists):
        Repository.init(backend, PW)


def test_open_errors(backend) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RepositoryNotFound):
        Repository.open(backend, PW)
    Repository.init(backend, PW)
    with pytest.raises(WrongPassword):
        Repository.open(backend, b"wrong")


def test_config_from_a_newer_version_is_refused() -> None:
    doc = RepoConfig(id="x").encode().replace(b'"version": 1', b'"version": 99')
    with pytest.raises(UnsupportedVersion):
        RepoConfig.decode(doc)


def test_chunks_round_trip_and_persist(backend) -> None:  # type: ignore[no-untyped-def]
    repo = Repository.init(backend, PW)
    rnd = random.Random(1)
    blobs = [rnd.randbytes(rnd.randrange(0, 300_000)) for _ in range(20)] + [b"x" * 100_000]
    ids = [repo.put_chunk(BlobType.DATA, b) for b in blobs]
    tree_id = repo.put_chunk(BlobType.TREE, b"tree bytes")
    repo.flush()
    repo.close()

    again = Repository.open(backend, PW)
    for cid, blob in zip(ids, blobs, strict=True):
        assert again.load_chunk(cid, BlobType.DATA, len(blob)) == blob
    assert again.load_chunk(tree_id, BlobType.TREE) == b"tree bytes"
    # A chunk is bound to its type: a data id cannot be read as a tree.
    with pytest.raises(IntegrityError):
        again.load_chunk(ids[0], BlobType.TREE)
    with pytest.raises(ChunkNotFound):
        again.load_chunk(os.urandom(32))


def test_data_and_trees_go_to_separate_packs(memory_repo: Repository) -> None:
    memory_repo.put_chunk(BlobType.DATA, b"data")
    memory_repo.put_chunk(BlobType.TREE, b"tree")
    memory_repo.flush()
    packs = list(memory_repo.backend.list("data/"))
    assert len(packs) == 2
    types = set()
    for obj in packs:
        entries = read_pack_header(memory_repo.backend.get(obj.name), memory_repo.sealer, obj.name)
        types |= {e.type for e in entries}
        assert len({e.type for e in entries}) == 1
        assert obj.name == fmt.pack_name(obj.name.rsplit("/", 1)[1])
    assert types == {BlobType.DATA, BlobType.TREE}


def test_identical_chunks_are_stored_once(memory_repo: Repository) -> None:
    data = os.urandom(50_000)
    a = memory_repo.put_chunk(BlobType.DATA, data)
    b = memory_repo.put_chunk(BlobType.DATA, data)
    assert a == b
    memory_repo.flush()
    assert memory_repo.stats.chunks_added == 1
    # Also across sessions: the index knows it.
    again = Repository.open(memory_repo.backend, PW)
    assert again.has_chunk(a)
    again.put_chunk(BlobType.DATA, data)
    again.flush()
    assert again.stats.chunks_added == 0
    assert again.stats.packs_written == 0


def test_chunk_ids_are_keyed_per_repository() -> None:
    one = Repository.init(MemoryBackend(), PW)
    two = Repository.init(MemoryBackend(), PW)
    assert one.chunk_id(b"same") != two.chunk_id(b"same")


def test_big_data_fills_several_packs_and_index_files(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW, compression_level=0)
    rnd = random.Random(2)
    blobs = [rnd.randbytes(1024 * 1024) for _ in range(40)]  # 40 MiB > 2 packs of 16 MiB
    ids = [repo.put_chunk(BlobType.DATA, b) for b in blobs]
    repo.flush()
    assert repo.stats.packs_written >= 3
    assert len(repo.list_index_files()) >= 1
    again = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    for cid, blob in zip(ids, blobs, strict=True):
        assert again.load_chunk(cid, BlobType.DATA, len(blob)) == blob


def test_nothing_is_visible_before_flush(memory_repo: Repository) -> None:
    memory_repo.put_chunk(BlobType.DATA, b"pending")
    assert list(memory_repo.backend.list("data/")) == []
    assert memory_repo.list_index_files() == []


def test_abandon_indexes_uploaded_packs(tmp_path: Path) -> None:
    """After an error, packs already uploaded are indexed so the next run reuses them."""
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW, compression_level=0)
    rnd = random.Random(3)
    ids = [repo.put_chunk(BlobType.DATA, rnd.randbytes(1024 * 1024)) for _ in range(40)]
    repo.abandon()
    repo.close()
    again = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    known = [cid for cid in ids if again.has_chunk(cid)]
    assert len(known) >= 16  # at least the first full pack
    for cid in known:
        again.load_chunk(cid)


def test_after_abandon_the_same_session_stores_what_was_dropped(tmp_path: Path) -> None:
    """A long-lived session (the server, a protection service): chunks queued in a
    pack that was aborted were never written, so the next backup in the same
    session must store them again, not take them as stored (a point naming a
    chunk that is nowhere)."""
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW, compression_level=0)
    rnd = random.Random(4)
    chunks = [rnd.randbytes(300_000) for _ in range(5)]  # less than a pack: all buffered
    ids = [repo.put_chunk(BlobType.DATA, c) for c in chunks]
    repo.abandon()
    assert not any(repo.has_chunk(cid) for cid in ids)
    assert [repo.put_chunk(BlobType.DATA, c) for c in chunks] == ids
    repo.flush()
    repo.close()
    again = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    assert [again.load_chunk(cid) for cid in ids] == chunks


def test_damaged_chunk_names_pack_and_chunk(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, PW)
    cid = repo.put_chunk(BlobType.DATA, os.urandom(10_000))
    repo.flush()
    loc = repo.locate(cid)
    path = tmp_path / "repo" / fmt.pack_name(loc.pack.hex())
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        Repository.open(backend, PW).load_chunk(cid)
    assert cid.hex()[:16] in str(info.value) and loc.pack.hex()[:16] in str(info.value)


def test_points_save_load_list_delete(memory_repo: Repository) -> None:
    first = memory_repo.save_point({"kind": "files", "n": 1})
    second = memory_repo.save_point({"kind": "files", "n": 2})
    assert sorted(memory_repo.list_point_ids()) == sorted([first, second])
    assert memory_repo.load_point(first) == {"kind": "files", "n": 1, "id": first}
    memory_repo.delete_point(first)
    assert [p["n"] for p in memory_repo.iter_points()] == [2]


def test_point_objects_are_encrypted(memory_repo: Repository) -> None:
    point = memory_repo.save_point({"kind": "files", "secret_path": "/home/ann/diary"})
    assert b"diary" not in memory_repo.backend.get(fmt.point_name(point))


def test_keys_add_remove_change(memory_repo: Repository) -> None:
    backend = memory_repo.backend
    second = memory_repo.add_key(b"second password")
    assert Repository.open(backend, b"second password").master == memory_repo.master
    listed = memory_repo.list_keys()
    assert len(listed) == 2 and sum(k["current"] for k in listed) == 1

    with pytest.raises(RepositoryError, match="in use"):
        memory_repo.remove_key(memory_repo.key_name[len("keys/") :])
    with pytest.raises(RepositoryError):
        memory_repo.remove_key("")  # ambiguous: matches both
    memory_repo.remove_key(second[len("keys/") :][:12])
    with pytest.raises(WrongPassword):
        Repository.open(backend, b"second password")

    memory_repo.change_password(b"new password")
    with pytest.raises(WrongPassword):
        Repository.open(backend, PW)
    assert Repository.open(backend, b"new password").master == memory_repo.master
    assert len(list(backend.list("keys/"))) == 1


def test_compression_level_is_fixed_at_init(memory_repo: Repository) -> None:
    repo = Repository.init(MemoryBackend(), PW, compression_level=0)
    repo.put_chunk(BlobType.DATA, b"a" * 100_000)
    repo.flush()
    assert sum(o.size for o in repo.backend.list("data/")) > 100_000
    memory_repo.put_chunk(BlobType.DATA, b"a" * 100_000)
    memory_repo.flush()
    assert sum(o.size for o in memory_repo.backend.list("data/")) < 10_000


class FailIndexOnce:
    """A backend whose first index-file write fails (a transient error), then recovers."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.location = inner.location
        self.capabilities = inner.capabilities
        self.failed = False

    def put(self, name: str, data) -> None:  # type: ignore[no-untyped-def]
        if name.startswith("index/") and not self.failed:
            self.failed = True
            raise TransientStorageError("the network blinked")
        self.inner.put(name, data)

    def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, attr)


def test_abandon_after_a_failed_index_write_still_indexes_the_packs() -> None:
    """Regression: a failed index write once dropped the list of packs to index."""
    inner = MemoryBackend()
    Repository.init(inner, PW).close()
    repo = Repository.open(FailIndexOnce(inner), PW)  # type: ignore[arg-type]
    cid = repo.put_chunk(BlobType.DATA, os.urandom(100_000))
    with pytest.raises(TransientStorageError):
        repo.flush()  # the pack is stored, its index file is not
    assert list(inner.list("data/"))
    repo.abandon()  # the backend works again: index what was stored
    assert Repository.open(inner, PW).has_chunk(cid)
