"""repair index and repair packs: heal the index and damaged packs (design 5a)."""

from __future__ import annotations

import pytest

from strongroom.errors import IntegrityError, RepositoryLocked, TransientStorageError
from strongroom.repository import format as fmt
from strongroom.repository import locks as locks_module
from strongroom.repository.format import BlobType
from strongroom.repository.repair import (
    QUARANTINE_PREFIX,
    read_header,
    rebuild_index,
    salvage_packs,
)
from strongroom.repository.repo import Repository
from strongroom.storage.memory import MemoryBackend
from tests.helpers.cli import PASSWORD


def fresh(repo: Repository) -> Repository:
    """The same repository opened again (a later command)."""
    return Repository.open(repo.backend, PASSWORD.encode())


def store_pack(repo: Repository, *datas: bytes) -> tuple[bytes, list[bytes]]:
    """One pack of these chunks, indexed; returns (pack id, chunk ids)."""
    before = set(repo.packs_written)
    ids = []
    for data in datas:
        cid = repo.chunk_id(data)
        repo.add_sealed(cid, BlobType.DATA, repo.seal_chunk(cid, BlobType.DATA, data), len(data))
        ids.append(cid)
    repo.flush()
    (pack,) = repo.packs_written - before
    return pack, ids


def indexed(repo: Repository) -> dict[bytes, set[bytes]]:
    out: dict[bytes, set[bytes]] = {}
    for name in repo.list_index_files():
        for cid, pack, *_ in repo.read_index_file(name).iter_entries():
            out.setdefault(pack, set()).add(cid)
    return out


def test_rebuild_drops_missing_packs_and_adds_unindexed_ones(memory_repo: Repository) -> None:
    kept, kept_ids = store_pack(memory_repo, b"a" * 5000, b"b" * 5000)
    lost, _ = store_pack(memory_repo, b"c" * 5000)
    memory_repo.backend.delete(fmt.pack_name(lost.hex()))
    # A pack in no index (an old index restored from a copy, a killed backup).
    orphan, orphan_ids = store_pack(memory_repo, b"d" * 5000)
    for name in memory_repo.list_index_files():
        if orphan in memory_repo.read_index_file(name).packs:
            memory_repo.backend.delete(name)
    old_files = set(memory_repo.list_index_files())

    result = rebuild_index(fresh(memory_repo))

    assert result.packs_missing == [lost.hex()]
    assert result.packs_added == [orphan.hex()]
    now = fresh(memory_repo)
    assert indexed(now) == {kept: set(kept_ids), orphan: set(orphan_ids)}
    assert not old_files & set(now.list_index_files())  # the old ones are gone
    assert now.load_chunk(orphan_ids[0]) == b"d" * 5000


def test_rebuild_skips_and_reports_a_pack_whose_header_is_damaged(
    memory_repo: Repository,
) -> None:
    pack, _ = store_pack(memory_repo, b"x" * 3000)
    for name in memory_repo.list_index_files():
        memory_repo.backend.delete(name)
    name = fmt.pack_name(pack.hex())
    blob = bytearray(memory_repo.backend.get(name))
    blob[-10] ^= 0xFF  # inside the sealed header
    memory_repo.backend.delete(name)
    memory_repo.backend.put(name, bytes(blob))
    result = rebuild_index(fresh(memory_repo))
    assert list(result.packs_damaged) == [pack.hex()]
    assert indexed(fresh(memory_repo)) == {}


@pytest.mark.parametrize("hlen", [0, 7, 2**32 - 1])
def test_header_length_from_storage_is_bounded(memory_repo: Repository, hlen: int) -> None:
    name = fmt.pack_name("ab" * 32)
    memory_repo.backend.put(name, b"SRPACK01" + b"\0" * 100 + hlen.to_bytes(4, "little"))
    with pytest.raises(IntegrityError):
        read_header(memory_repo, bytes.fromhex("ab" * 32), 112)


def test_rebuild_with_a_lapsed_lock_deletes_no_old_index(
    memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_pack(memory_repo, b"y" * 3000)
    old = set(memory_repo.list_index_files())
    repo = fresh(memory_repo)
    repo.held_lock = repo.lock(exclusive=True)
    repo.held_lock._last_refresh -= 2 * locks_module.STALE_SECONDS  # paused for an hour
    with pytest.raises(RepositoryLocked):
        rebuild_index(repo)
    assert old <= set(memory_repo.list_index_files())


def test_salvage_copies_good_chunks_quarantines_the_pack_and_names_the_lost(
    memory_repo: Repository,
) -> None:
    datas = [bytes([i]) * 4000 for i in range(1, 5)]
    pack, ids = store_pack(memory_repo, *datas)
    healthy, healthy_ids = store_pack(memory_repo, b"healthy" * 500)
    name = fmt.pack_name(pack.hex())
    blob = bytearray(memory_repo.backend.get(name))
    header = {e.chunk_id: e for e in read_header(memory_repo, pack, len(blob))}
    blob[header[ids[1]].offset + 20] ^= 0x01  # one chunk damaged
    memory_repo.backend.delete(name)
    memory_repo.backend.put(name, bytes(blob))

    result = salvage_packs(fresh(memory_repo))

    assert list(result.packs_damaged) == [pack.hex()]
    assert result.chunks_lost == [ids[1].hex()]
    assert result.chunks_salvaged == 3
    assert result.quarantined == [pack.hex()]
    assert memory_repo.backend.exists(QUARANTINE_PREFIX + pack.hex())
    assert not memory_repo.backend.exists(name)
    now = fresh(memory_repo)
    for cid, data in zip(ids, datas, strict=True):
        if cid != ids[1]:
            assert now.load_chunk(cid) == data
    assert not now.has_chunk(ids[1])
    assert now.load_chunk(healthy_ids[0]) == b"healthy" * 500
    assert pack not in indexed(now) and healthy in indexed(now)


def test_salvage_of_a_sound_repository_changes_nothing(memory_repo: Repository) -> None:
    store_pack(memory_repo, b"z" * 3000)
    before = sorted(o.name for o in memory_repo.backend.list(""))
    result = salvage_packs(fresh(memory_repo))
    assert result.packs_damaged == {} and result.packs_read == 1
    assert sorted(o.name for o in memory_repo.backend.list("")) == before


def test_duplicate_entry_of_a_missing_pack_does_not_hide_the_copy() -> None:
    """After a pack loss and a re-store, the index names the chunk twice; every
    reader must find the copy that exists, whatever the order of index files."""
    backend = MemoryBackend()
    repo = Repository.init(backend, PASSWORD.encode())
    lost, (cid,) = store_pack(repo, b"again" * 1000)
    backend.delete(fmt.pack_name(lost.hex()))
    second = fresh(repo)
    assert not second.has_chunk(cid)
    store_pack(second, b"again" * 1000)
    for _ in range(5):
        reader = fresh(repo)
        assert len(reader.index.lookup_all(cid)) == 2
        assert reader.has_chunk(cid)
        assert reader.load_chunk(cid) == b"again" * 1000


class _FlakyRanges:
    """Storage whose reads of one object time out (a network error, not damage)."""

    def __init__(self, repo: Repository, name: str) -> None:
        self.name = name
        get, get_range = repo.backend.get, repo.backend.get_range

        def flaky_get(obj: str) -> bytes:
            if obj == self.name:
                raise TransientStorageError(f"{obj}: timed out")
            return get(obj)

        def flaky_get_range(obj: str, offset: int, length: int) -> bytes:
            if obj == self.name:
                raise TransientStorageError(f"{obj}: timed out")
            return get_range(obj, offset, length)

        self.backend = repo.backend
        repo.backend.get = flaky_get  # type: ignore[method-assign]
        repo.backend.get_range = flaky_get_range  # type: ignore[method-assign]

    def heal(self) -> None:
        del self.backend.get, self.backend.get_range  # the class's methods again


def test_rebuild_fails_on_a_network_error_reading_a_pack_header(
    memory_repo: Repository,
) -> None:
    """A timeout is no damage: the good pack must not drop out of the new index
    while the old index files are deleted (an orphan, its chunks unreachable)."""
    pack, ids = store_pack(memory_repo, b"z" * 3000)
    old = set(memory_repo.list_index_files())
    repo = fresh(memory_repo)
    flaky = _FlakyRanges(repo, fmt.pack_name(pack.hex()))
    with pytest.raises(TransientStorageError):
        rebuild_index(repo, read_all_packs=True)
    flaky.heal()
    assert set(memory_repo.list_index_files()) == old
    assert fresh(memory_repo).load_chunk(ids[0]) == b"z" * 3000


def test_rebuild_fails_on_a_network_error_reading_an_index_file(
    memory_repo: Repository,
) -> None:
    store_pack(memory_repo, b"w" * 3000)
    old = set(memory_repo.list_index_files())
    repo = fresh(memory_repo)
    _FlakyRanges(repo, sorted(old)[0])
    with pytest.raises(TransientStorageError):
        rebuild_index(repo)
    assert set(memory_repo.list_index_files()) == old
