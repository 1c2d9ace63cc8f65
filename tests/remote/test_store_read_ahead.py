"""The agent's read-ahead (remote/store.py `_batch_from`): a data read fetches
with it the planned chunks in the next `PREFETCH` places of the plan that are
neither cached nor in flight, and nothing when its cache could not keep them.
Skipping cached chunks without that bound reached ever further ahead, filled
the cache with chunks needed much later, and then every read fetched 64
chunks to keep one."""

from __future__ import annotations

import pytest

from strongroom.remote import store as remote_store
from strongroom.remote.client import Client
from strongroom.remote.config import RepositoryInfo
from strongroom.remote.store import PREFETCH, RemoteStore
from strongroom.repository.format import BlobType

INFO = RepositoryInfo("ab" * 16, "ab" * 32, 7, 256, 1024, 4096)


def _store(planned: int) -> tuple[RemoteStore, list[bytes]]:
    store = RemoteStore(Client(["http://127.0.0.1:9"]), INFO)
    ids = [n.to_bytes(32, "big") for n in range(planned)]
    store.plan_reads((cid, 1000) for cid in ids)
    return store, ids


def test_the_read_ahead_stays_within_the_next_places_of_the_plan() -> None:
    store, ids = _store(4 * PREFETCH)
    try:
        assert store._batch_from(ids[0], BlobType.DATA) == ids[: PREFETCH + 1]
        for cid in ids[1 : PREFETCH + 1]:  # fetched ahead before: cached now
            store._cache[cid] = b"x" * 1000
            store._cache_bytes += 1000
        # not the chunks beyond the window: they are needed much later
        assert store._batch_from(ids[0], BlobType.DATA) == [ids[0]]
        del store._cache[ids[10]]
        assert store._batch_from(ids[0], BlobType.DATA) == [ids[0], ids[10]]
        assert store._batch_from(ids[3 * PREFETCH], BlobType.DATA)[-1] == ids[-1]
    finally:
        store.close()


def test_no_read_ahead_when_the_cache_could_not_keep_it(monkeypatch: pytest.MonkeyPatch) -> None:
    store, ids = _store(2 * PREFETCH)
    try:
        monkeypatch.setattr(remote_store, "CACHE_BYTES", 40_000)
        monkeypatch.setattr(remote_store, "PREFETCH_BYTES", 10_000)
        assert len(store._batch_from(ids[0], BlobType.DATA)) == 1 + 10  # 10 of 1000 bytes
        store._cache_bytes = 35_000  # full but for less than one read-ahead
        assert store._batch_from(ids[0], BlobType.DATA) == [ids[0]]
    finally:
        store.close()
