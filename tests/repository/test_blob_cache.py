"""The on-disk blob cache: hits, misses, the size bound, permissions, a
damaged database and names (repository/blob_cache.py)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from strongroom.remote.tree_cache import open_tree_cache
from strongroom.repository import blob_cache
from strongroom.repository.blob_cache import BlobCache, cache_home, count_entries, repository_folder


def _id(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _poke(cache: BlobCache, blob_id: bytes, data: bytes) -> None:
    """Another writer (or damage) changes an entry behind the cache's back."""
    db = sqlite3.connect(cache.path)
    with db:
        db.execute("UPDATE blobs SET data = ? WHERE id = ?", (data, blob_id))
    db.close()


def test_put_get_and_the_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    cache = BlobCache(str(folder), limit=1 << 20, max_blob=100)
    assert cache.get(_id(1)) is None and not cache.has(_id(1))
    assert not folder.exists()  # a miss makes nothing
    cache.put(_id(1), b"tree one")
    assert cache.get(_id(1)) == b"tree one" and cache.has(_id(1))
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    cache.put(_id(2), b"x" * 101)  # over max_blob: not kept
    assert cache.get(_id(2)) is None
    _poke(cache, _id(1), b"y" * 101)  # grown beyond the bound: a miss, dropped
    assert cache.get(_id(1)) is None and not cache.has(_id(1))
    cache.drop(_id(3))  # absent: no error
    for n in range(10, 20):  # handed to the background writer
        cache.put_soon(_id(n), b"soon %d" % n)
    cache.wait()
    assert [cache.get(_id(n)) for n in range(10, 20)] == [b"soon %d" % n for n in range(10, 20)]
    writer = cache._writer
    cache.put_soon(_id(20), b"last")
    cache.close()  # written, and the thread is gone (a later put_soon starts another)
    assert cache.get(_id(20)) == b"last" and writer is not None and not writer.is_alive()
    assert count_entries(cache.path) == 11
    for mode in sorted({stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}):
        assert mode == 0o600  # the database and SQLite's files beside it
    with pytest.raises(ValueError):
        cache.get(b"short")


def test_the_size_bound_evicts_the_least_recently_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(blob_cache.time, "time", lambda: clock[0])
    folder = str(tmp_path / "c")
    cache = BlobCache(folder, limit=1000, max_blob=1000)
    for n in range(9):
        clock[0] += 1  # a clear age order
        cache.put(_id(n), bytes([n]) * 100)
    clock[0] += 1
    cache.put(_id(9), b"z" * 100)  # 1000 bytes: at the bound
    assert cache.total_bytes == 1000
    clock[0] += 1
    assert cache.get(_id(0)) is not None  # used now: the youngest
    clock[0] += 1
    cache.put(_id(10), b"w" * 150)  # 1150: the oldest go until <= 900
    assert cache.total_bytes == 850
    kept = [n for n in range(11) if cache.has(_id(n))]
    assert kept == [0, 4, 5, 6, 7, 8, 9, 10]
    # another process's view of the same folder sees the same entries
    other = BlobCache(folder, limit=1000, max_blob=1000)
    assert other.total_bytes == cache.total_bytes and other.get(_id(10)) == b"w" * 150
    other.close()
    cache.clear()
    assert not os.path.exists(folder)


def test_a_damaged_database_is_started_again_and_never_followed(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    cache = BlobCache(str(folder), limit=1 << 20, max_blob=100)
    cache.put(_id(1), b"one")
    cache.close()
    Path(cache.path).write_bytes(b"not a database" * 100)
    assert cache.get(_id(1)) is None  # a miss, not an error; the file is removed
    cache.put(_id(2), b"two")
    assert cache.get(_id(2)) == b"two"
    cache.close()
    # a symlink in its place is not followed: no cache, and nothing written there
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    for suffix in ("", "-wal", "-shm"):
        Path(cache.path + suffix).unlink(missing_ok=True)
    Path(cache.path).symlink_to(target)
    linked = BlobCache(str(folder), limit=1 << 20, max_blob=100)
    linked.put(_id(3), b"three")
    assert linked.get(_id(3)) is None and target.read_bytes() == b"keep"


def test_the_earlier_layout_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    old = folder / "ab" / ("ab" * 32)
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old entry")
    cache = BlobCache(str(folder), limit=1 << 20, max_blob=100)
    cache.put(_id(1), b"one")
    assert not old.parent.exists() and cache.get(_id(1)) == b"one"


def test_folders_are_named_only_by_hex_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == str(tmp_path / "xdg" / "strongroom")
    good = "ab" * 16
    assert repository_folder("agent", good) == str(tmp_path / "xdg" / "strongroom" / "agent" / good)
    for bad in ("../../etc", "AB" * 16, "ab", "ab" * 16 + "/x", "ab\x00" * 8):
        assert repository_folder("agent", bad) is None
        assert open_tree_cache(bad) is None
    with pytest.raises(ValueError):
        repository_folder("../x", good)
    tree_cache = open_tree_cache(good)
    assert tree_cache is not None and tree_cache.folder.endswith(f"agent/{good}")
    monkeypatch.setenv("STRONGROOM_NO_CACHE", "1")
    assert open_tree_cache(good) is None
