"""The local cache of a remote repository (issue #17): a second reader gets
index files, points and trees from the cache, not from storage; every hit is
verified as a read from storage is, so a damaged or planted entry is dropped
and read again."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from pathlib import Path

from strongroom.repository.blob_cache import DATABASE
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.storage.base import Capabilities
from strongroom.storage.memory import MemoryBackend
from tests.helpers.cli import PASSWORD


class RemoteLike(MemoryBackend):
    """An in-memory store that says it is remote and counts its reads by prefix."""

    capabilities = Capabilities(parallel_requests=4, remote=True)

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def get(self, name: str) -> bytes:
        self.reads[name.split("/", 1)[0]] += 1
        return super().get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        self.reads[name.split("/", 1)[0]] += 1
        return super().get_range(name, offset, length)


def _filled(backend: RemoteLike) -> tuple[bytes, str]:
    repo = Repository.init(backend, PASSWORD.encode())
    tree = repo.put_chunk(BlobType.TREE, b"a directory listing" * 100)
    repo.flush()
    point = repo.save_point({"kind": "files", "tree": tree.hex(), "paths": ["/x"]})
    repo.close()
    return tree, point


def _read_everything(backend: RemoteLike, home: Path, tree: bytes, point: str) -> Counter[str]:
    backend.reads.clear()
    repo = Repository.open(backend, PASSWORD.encode())
    repo.attach_cache(str(home))
    try:
        repo.load_index()  # every index file
        assert repo.load_point(point)["tree"] == tree.hex()
        assert repo.load_chunk(tree, BlobType.TREE) == b"a directory listing" * 100
        assert repo.cache is not None
        for cache in (repo.cache.documents, repo.cache.indexes, repo.cache.trees):
            cache.wait()
    finally:
        repo.close()
    return Counter({k: v for k, v in backend.reads.items() if k in ("points", "index", "data")})


def test_a_second_reader_reads_no_index_point_or_tree_from_storage(tmp_path: Path) -> None:
    backend = RemoteLike()
    tree, point = _filled(backend)
    first = _read_everything(backend, tmp_path, tree, point)
    assert first["points"] == 1 and first["index"] >= 1 and first["data"] == 1
    second = _read_everything(backend, tmp_path, tree, point)
    assert second == Counter()  # no point, no index file, no pack read


def test_damaged_or_planted_entries_are_dropped_and_read_again(tmp_path: Path) -> None:
    backend = RemoteLike()
    tree, point = _filled(backend)
    _read_everything(backend, tmp_path, tree, point)
    databases = [Path(root) / f for root, _, files in os.walk(tmp_path) for f in files
                 if f == DATABASE]  # fmt: skip
    flipped = 0
    for path in databases:  # flip a byte in every entry
        db = sqlite3.connect(path)
        with db:
            for blob_id, data in db.execute("SELECT id, data FROM blobs").fetchall():
                data = bytearray(data)
                data[len(data) // 2] ^= 0xFF
                db.execute("UPDATE blobs SET data = ? WHERE id = ?", (bytes(data), blob_id))
                flipped += 1
        db.close()
    assert flipped >= 3
    again = _read_everything(backend, tmp_path, tree, point)
    assert again["points"] == 1 and again["data"] == 1  # read from storage, right answers
    healed = _read_everything(backend, tmp_path, tree, point)
    assert healed == Counter()  # and the good copies are cached again


def test_local_storage_is_not_cached(tmp_path: Path) -> None:
    from strongroom.services.session import init_repository, open_repository

    init_repository(str(tmp_path / "repo"), PASSWORD.encode())
    with open_repository(str(tmp_path / "repo"), PASSWORD.encode()) as repo:
        assert repo.cache is None
