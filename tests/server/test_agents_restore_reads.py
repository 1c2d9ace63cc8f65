"""A files restore through the server reads each chunk about once and many a
request: the agent's store plans every file's chunks in the walk's order
(`plan_walk`) and fetches ahead only the next `PREFETCH` places of that plan.
Its look-ahead once skipped cached chunks without a bound, filled its cache
with chunks needed much later and then fetched 64 chunks to keep one (a
512 MiB restore read its data about fifteen times over, 137 s on RGW)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.remote import store as remote_store
from strongroom.remote.store import RemoteStore
from strongroom.remote.tree_cache import open_tree_cache
from strongroom.services.agent_backup import restore_through_server
from strongroom.services.restore import HowToRestore
from tests.server.agent_fixtures import Site, site  # noqa: F401 (fixture)
from tests.server.test_agents_cache import Recorder, _all_trees, _backup, recorded_store


def _tree(src: Path) -> int:
    """Folders with files before, between and after subfolders (the walk's
    order is not the trees' order); the number of files."""
    count = 0
    for i in range(6):
        for j in range(4):
            folder = src / f"d{i}" / f"e{j}"
            folder.mkdir(parents=True)
            for k in range(5):
                (folder / f"f{k}").write_bytes(os.urandom(4000 + 37 * k))
                count += 1
        (src / f"d{i}" / "a-first").write_bytes(os.urandom(5000))
        (src / f"d{i}" / "z-last").write_bytes(os.urandom(6000))
        count += 2
    return count


def test_a_restore_reads_each_chunk_about_once(
    site: Site,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a read-ahead cache of a few dozen chunks: what 64 MiB is to a large restore
    monkeypatch.setattr(remote_store, "CACHE_BYTES", 96 << 10)
    monkeypatch.setattr(remote_store, "PREFETCH_BYTES", 24 << 10)
    creds = site.enroll("pc-1")
    src = tmp_path / "src"
    files = _tree(src)
    cache = open_tree_cache(creds["repository"]["id"])
    backed, _, _ = _backup(creds, site, src, cache)
    assert backed.point is not None
    trees = len(_all_trees(site, bytes.fromhex(backed.point.tree)))

    def restore(target: Path, how: HowToRestore | None = None) -> tuple[RemoteStore, Recorder]:
        store, recorder = recorded_store(creds, site, cache)
        try:
            restore_through_server(store, backed.point.id, str(target), how=how)
        finally:
            store.close()
        return store, recorder

    target = tmp_path / "restored"
    store, recorder = restore(target)
    restored = target / src.relative_to("/")
    for path in src.rglob("*"):
        if path.is_file():
            assert (restored / path.relative_to(src)).read_bytes() == path.read_bytes()
    assert store.traffic.trees_cached >= trees - 1  # the trees from the agent's cache
    assert store.traffic.chunks_read <= files * 1.2, (files, store.traffic)
    reads = recorder.seen.count(("POST", "/chunks/read"))
    assert reads * 3 <= files, (reads, files)

    # again over the same tree with --overwrite if-changed: no data is read
    store, recorder = restore(target, HowToRestore(overwrite="if-changed"))
    assert store.traffic.chunks_read == 0, store.traffic
