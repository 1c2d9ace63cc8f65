"""Review of the SQLite blob cache (repository/blob_cache.py): a damaged or
hostile database is a miss, never an error; two processes sharing one
cache keep its size bound; a symlinked folder is never written through."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from strongroom.repository.blob_cache import BlobCache


def _id(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _hostile(cache: BlobCache, rows: list[tuple[bytes, object]]) -> None:
    """Write rows whose `data` is not a blob (SQLite keeps any type in a BLOB column)."""
    cache.put(_id(999), b"seed")  # the database exists, with its schema
    cache.close()
    db = sqlite3.connect(cache.path)
    with db:
        db.executemany("INSERT OR REPLACE INTO blobs VALUES (?, ?, 0)", rows)
    db.close()


@pytest.mark.parametrize("value", ["text", 3.5, 1 << 40, 7])
def test_an_entry_that_is_no_blob_is_a_miss_and_dropped(tmp_path: Path, value: object) -> None:
    cache = BlobCache(str(tmp_path / "c"), limit=1 << 20, max_blob=100)
    _hostile(cache, [(_id(1), value)])
    assert cache.get(_id(1)) is None  # never TypeError, MemoryError or zero bytes
    assert not cache.has(_id(1))  # dropped
    assert cache.get(_id(999)) == b"seed"  # the rest of the cache still serves
    cache.close()


def test_two_processes_sharing_one_cache_keep_its_bound(tmp_path: Path) -> None:
    folder = str(tmp_path / "c")
    one = BlobCache(folder, limit=10_000, max_blob=5_000)
    two = BlobCache(folder, limit=10_000, max_blob=5_000)  # another process's connection
    one.put(_id(1), b"a" * 100)  # `one` counts the cache here: 100 bytes
    for n in range(2, 4):
        two.put(_id(n), b"b" * 4_000)  # 8 100 bytes now, under the bound
    for n in range(4, 6):
        one.put(_id(n), b"c" * 4_000)  # 16 100 bytes unless one sees two's writes
    assert one.total_bytes <= 10_000
    assert two.total_bytes <= 10_000
    one.close()
    two.close()


def test_a_symlinked_folder_is_never_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "blobs.sqlite").write_bytes(b"not yours")
    folder = tmp_path / "c"
    folder.symlink_to(elsewhere)
    cache = BlobCache(str(folder), limit=1 << 20, max_blob=100)
    cache.put(_id(1), b"tree")
    assert cache.get(_id(1)) is None
    cache.put(_id(2), b"tree")  # after its one restart, too
    assert (elsewhere / "blobs.sqlite").read_bytes() == b"not yours"  # nothing removed
    assert sorted(os.listdir(elsewhere)) == ["blobs.sqlite"]
    cache.close()


def test_a_database_of_another_shape_is_started_again(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir(mode=0o700)
    db = sqlite3.connect(folder / "blobs.sqlite")
    with db:
        db.execute("CREATE TABLE blobs (id BLOB, data BLOB)")  # no `used`
        db.execute("INSERT INTO blobs VALUES (?, ?)", (_id(1), b"old"))
    db.close()
    cache = BlobCache(str(folder), limit=1 << 20, max_blob=100)
    cache.put(_id(2), b"new")
    cache.put(_id(3), b"newer")
    assert cache.get(_id(3)) == b"newer"
    cache.close()


def test_two_processes_writing_at_once_never_start_the_database_again(tmp_path: Path) -> None:
    """Contention is waited for (SQLite's busy timeout), never taken for
    damage: a restart would remove the database the other one uses."""
    import threading

    folder = str(tmp_path / "c")
    caches = [BlobCache(folder, limit=1 << 20, max_blob=1000) for _ in range(3)]

    def write(n: int) -> None:
        for i in range(150):
            caches[n].put(_id(n * 1000 + i), bytes([n]) * 200)
            caches[n].get(_id(((n + 1) % 3) * 1000 + i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(c._restarted for c in caches)
    for n in range(3):
        assert caches[0].get(_id(n * 1000 + 149)) == bytes([n]) * 200
    for c in caches:
        c.close()


@pytest.mark.parametrize("folder", ["a#b", "a?b", "a%20b", "a b"])
def test_entries_are_counted_under_any_folder_name(tmp_path: Path, folder: str) -> None:
    from strongroom.repository.blob_cache import count_entries

    cache = BlobCache(str(tmp_path / folder / "c"), limit=1 << 20, max_blob=100)
    cache.put(_id(1), b"one")
    cache.put(_id(2), b"two")
    cache.close()
    assert count_entries(cache.path) == 2


def test_an_oversized_entry_is_never_loaded(tmp_path: Path) -> None:
    """A hostile database's 16 MiB row under a 100-byte bound: a miss,
    dropped, without the process holding its bytes."""
    import tracemalloc

    cache = BlobCache(str(tmp_path / "c"), limit=1 << 20, max_blob=100)
    _hostile(cache, [(_id(1), b"x" * (16 << 20))])
    tracemalloc.start()
    try:
        assert cache.get(_id(1)) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert not cache.has(_id(1))
    cache.close()
