"""The agent's tree cache through an in-process server: a backup over an
unchanged tree reads no tree from the server, a small change reads none
either, and a corrupt or foreign cache entry is dropped and fetched again."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.model.tree import decode_tree
from strongroom.remote.client import Client
from strongroom.remote.config import RepositoryInfo
from strongroom.remote.store import RemoteStore
from strongroom.remote.tree_cache import open_tree_cache
from strongroom.repository.blob_cache import BlobCache
from strongroom.repository.format import BlobType
from strongroom.services.agent_backup import backup_through_server
from strongroom.services.backup import BackupRequest, BackupResult
from tests.server.agent_fixtures import Site, site  # noqa: F401 (fixture)


class Recorder(httpx.BaseTransport):
    """Forwards to the in-process app and records each request's method and path."""

    def __init__(self, at: Site) -> None:
        self.inner: httpx.BaseTransport = at.client._transport
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path.removeprefix("/api/v1/agent")))
        return self.inner.handle_request(request)


def recorded_store(
    creds: dict[str, Any], at: Site, cache: BlobCache | None
) -> tuple[RemoteStore, Recorder]:
    """The agent's store of `creds` against the in-process server, every
    request recorded."""
    recorder = Recorder(at)
    client = Client(
        ["http://testserver"],
        f"{creds['agent_id']}.{creds['secret']}",
        http=httpx.Client(transport=recorder),
    )
    return RemoteStore(
        client, RepositoryInfo.from_doc(creds["repository"]), tree_cache=cache
    ), recorder


def _backup(
    creds: dict[str, Any], at: Site, src: Path, cache: BlobCache | None
) -> tuple[BackupResult, RemoteStore, Recorder]:
    store, recorder = recorded_store(creds, at, cache)
    try:
        result = backup_through_server(store, "pc-1", BackupRequest(paths=[str(src)]))
    finally:
        store.close()
    return result, store, recorder


def _subtree(at: Site, root: str, path: Path) -> bytes:
    """The id of the tree of folder `path` in the point whose root is `root`."""
    tree = bytes.fromhex(root)
    for part in path.parts[1:]:
        nodes = decode_tree(at.intake.repo.load_chunk(tree, BlobType.TREE))
        found = [n.subtree for n in nodes if n.name == part.encode()]
        assert len(found) == 1 and found[0] is not None
        tree = found[0]
    return tree


def _all_trees(at: Site, root: bytes) -> set[bytes]:
    found = {root}
    for node in decode_tree(at.intake.repo.load_chunk(root, BlobType.TREE)):
        if node.subtree is not None:
            found |= _all_trees(at, node.subtree)
    return found


def _tree(src: Path) -> int:
    """Folders three deep, a small file in each leaf; the number of folders."""
    for i in range(4):
        for j in range(5):
            leaf = src / f"d{i}" / f"e{j}"
            leaf.mkdir(parents=True)
            (leaf / "f").write_bytes(b"%d %d\n" % (i, j))
    return 1 + 4 + 4 * 5


@pytest.fixture
def enrolled(site: Site, tmp_path: Path) -> tuple[Site, dict[str, Any], Path, BlobCache]:  # noqa: F811
    creds = site.enroll("pc-1")
    cache = open_tree_cache(creds["repository"]["id"])
    assert cache is not None and cache.folder.startswith(str(tmp_path))  # XDG_CACHE_HOME
    return site, creds, tmp_path / "src", cache


def test_an_unchanged_tree_reads_no_tree_and_a_small_change_none_either(
    enrolled: tuple[Site, dict[str, Any], Path, BlobCache],
) -> None:
    site, creds, src, cache = enrolled  # noqa: F811
    folders = _tree(src)
    first, store, _ = _backup(creds, site, src, cache)
    assert first.point is not None and store.traffic.chunks_read == 0
    assert store.traffic.trees_cached == 0  # nothing to read: a first backup
    # the first walk set the folders' atimes (relatime): their trees change once
    first, store, _ = _backup(creds, site, src, cache)
    assert first.point is not None and store.traffic.chunks_read == 0

    again, store, recorder = _backup(creds, site, src, cache)
    assert again.point is not None and again.point.parent == first.point.id
    assert _subtree(site, again.point.tree, src) == _subtree(site, first.point.tree, src)
    assert store.traffic.chunks_read == 0
    assert store.traffic.trees_cached >= folders
    # the parent point, one question for the trees above the backed-up folder
    # (encoded again each run; /tmp's own time may change meanwhile: then one
    # bundle), the commit: no tree read
    # (and the seed list: a files backup through a server chooses its seeds)
    assert recorder.seen[:3] == [("GET", "/points"), ("GET", "/seeds"), ("POST", "/chunks/missing")]
    assert recorder.seen[-1] == ("POST", "/points") and len(recorder.seen) <= 5

    (src / "d2" / "e3" / "f").write_bytes(b"changed\n")
    changed, store, recorder = _backup(creds, site, src, cache)
    assert changed.point is not None
    assert _subtree(site, changed.point.tree, src) != _subtree(site, first.point.tree, src)
    assert store.traffic.chunks_read == 0
    assert ("POST", "/chunks/read") not in recorder.seen
    # the file's chunk and its folders' trees are new: one question, one bundle
    assert store.traffic.asked == store.traffic.missing >= 4
    assert recorder.seen.count(("POST", "/chunks/missing")) == 1
    assert recorder.seen.count(("PUT", "/chunks")) == 1

    # without the cache every tree comes from the server again
    plain, store, _ = _backup(creds, site, src, None)
    assert plain.point is not None
    assert _subtree(site, plain.point.tree, src) == _subtree(site, changed.point.tree, src)
    assert store.traffic.chunks_read >= folders and store.traffic.trees_cached == 0


def test_a_corrupt_or_foreign_cache_entry_is_dropped_and_fetched_again(
    enrolled: tuple[Site, dict[str, Any], Path, BlobCache],
) -> None:
    site, creds, src, cache = enrolled  # noqa: F811
    _tree(src)
    _backup(creds, site, src, cache)
    first, _, _ = _backup(creds, site, src, cache)  # the folders' atimes settled
    assert first.point is not None
    root = bytes.fromhex(first.point.tree)
    others = [t for t in sorted(_all_trees(site, root)) if t != root]
    db = sqlite3.connect(cache.path)
    with db:
        db.execute("UPDATE blobs SET data = ? WHERE id = ?", (b"\x01not zstd", root))  # corrupt
        db.execute(  # another tree under this name
            "UPDATE blobs SET data = (SELECT data FROM blobs WHERE id = ?) WHERE id = ?",
            (others[1], others[0]),
        )
    db.close()
    cache.drop(others[2])  # evicted meanwhile
    again, store, _ = _backup(creds, site, src, cache)
    assert again.point is not None
    assert _subtree(site, again.point.tree, src) == _subtree(site, first.point.tree, src)
    # Those three from the server; a read-ahead of siblings may bring one more
    # when it plans while a re-fetched tree's cache write is still queued.
    assert 3 <= store.traffic.chunks_read <= 4, store.traffic
    fresh = RemoteStore(
        Client(["http://testserver"]), RepositoryInfo.from_doc(creds["repository"]),
        tree_cache=cache,
    )  # fmt: skip
    for tree in (root, others[0], others[2]):  # written again, and right
        assert fresh._cached_tree(tree, 1 << 20) is not None
