"""The on-disk blob cache: hits, misses, the size bound, permissions and
names (repository/blob_cache.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from strongroom.remote.tree_cache import open_tree_cache
from strongroom.repository.blob_cache import BlobCache, cache_home, repository_folder


def _id(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_put_get_and_the_files_are_private(tmp_path: Path) -> None:
    cache = BlobCache(str(tmp_path / "c"), limit=1 << 20, max_blob=100)
    assert cache.get(_id(1)) is None and not cache.has(_id(1))
    cache.put(_id(1), b"tree one")
    assert cache.get(_id(1)) == b"tree one" and cache.has(_id(1))
    path = tmp_path / "c" / _id(1).hex()[:2] / _id(1).hex()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    cache.put(_id(2), b"x" * 101)  # over max_blob: not kept
    assert cache.get(_id(2)) is None
    path.write_bytes(b"y" * 101)  # grown on disk beyond the bound: a miss, dropped
    assert cache.get(_id(1)) is None and not path.exists()
    cache.drop(_id(3))  # absent: no error
    for n in range(10, 20):  # handed to the background writer
        cache.put_soon(_id(n), b"soon %d" % n)
    cache.wait()
    assert [cache.get(_id(n)) for n in range(10, 20)] == [b"soon %d" % n for n in range(10, 20)]
    writer = cache._writer
    cache.put_soon(_id(20), b"last")
    cache.close()  # written, and the thread is gone (a later put_soon starts another)
    assert cache.get(_id(20)) == b"last" and writer is not None and not writer.is_alive()
    with pytest.raises(ValueError):
        cache.get(b"short")


def test_the_size_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    folder = str(tmp_path / "c")
    cache = BlobCache(folder, limit=1000, max_blob=1000)
    for n in range(9):
        cache.put(_id(n), bytes([n]) * 100)
        os.utime(cache._path(_id(n)), (1000 + n, 1000 + n))  # a clear age order
    cache._sizes = None  # rescan with those ages
    cache.put(_id(9), b"z" * 100)  # 1000 bytes: at the bound
    assert cache.total_bytes == 1000
    assert cache.get(_id(0)) is not None  # used now: the youngest
    cache.put(_id(10), b"w" * 150)  # 1150: the oldest go until <= 900
    assert cache.total_bytes == 850
    kept = [n for n in range(11) if cache.has(_id(n))]
    assert kept == [0, 4, 5, 6, 7, 8, 9, 10]
    # another process's view of the same folder counts the same bytes
    assert BlobCache(folder, limit=1000, max_blob=1000).total_bytes == cache.total_bytes
    cache.clear()
    assert not os.path.exists(folder)


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
