"""--limit-upload's and --limit-download's backend wrapper: the contract holds, writes
and reads are held to their rates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.bandwidth import TokenBucket
from strongroom.storage import Backend
from strongroom.storage.base import SparseTemp, StreamingPut
from strongroom.storage.local import LocalBackend
from strongroom.storage.memory import MemoryBackend
from strongroom.storage.testing import BackendContract
from strongroom.storage.throttle import throttled
from tests.test_bandwidth import MIB, FakeClock


class TestThrottledLocalBackend(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        backend = throttled(LocalBackend(tmp_path / "store"), TokenBucket(1 << 40))
        yield backend
        backend.close()


def test_local_writes_are_held_to_the_rate(tmp_path: Path) -> None:
    clock = FakeClock()
    bucket = TokenBucket(8 * MIB, clock=clock, sleep=clock.sleep)
    backend = throttled(LocalBackend(tmp_path / "store"), bucket)
    assert isinstance(backend, StreamingPut)
    backend.put("data/00/a", bytes(MIB))
    backend.put("data/00/b", [bytes(MIB // 2), bytes(MIB // 2)])
    temp = backend.open_temp()
    assert isinstance(temp, SparseTemp)  # the local backend's holes stay holes
    temp.write(bytes(MIB))
    temp.skip(64 * MIB)  # costs no upload
    temp.write(bytes(MIB))
    temp.commit("data/00/c")
    backend.get("data/00/a")  # reads are free
    assert clock.now - 1000.0 == pytest.approx(0.5)  # 4 MiB at 8 MiB/s
    assert backend.size("data/00/c") == 66 * MIB
    assert (tmp_path / "store" / "data" / "00" / "b").read_bytes() == bytes(MIB)


def test_a_backend_that_does_not_stream_is_not_made_to() -> None:
    assert not isinstance(throttled(MemoryBackend(), TokenBucket(MIB)), StreamingPut)


def test_reads_are_held_to_the_download_rate_and_writes_are_then_free(tmp_path: Path) -> None:
    clock = FakeClock()
    bucket = TokenBucket(4 * MIB, clock=clock, sleep=clock.sleep)
    backend = throttled(LocalBackend(tmp_path / "store"), None, bucket)
    backend.put("data/00/a", bytes(2 * MIB))  # no upload limit: free
    assert clock.now == 1000.0
    assert backend.get("data/00/a") == bytes(2 * MIB)
    assert backend.get_range("data/00/a", MIB, 4 * MIB) == bytes(MIB)  # the bytes returned
    backend.size("data/00/a")
    list(backend.list("data/"))  # metadata is free
    assert clock.now - 1000.0 == pytest.approx(0.75)  # 3 MiB at 4 MiB/s


def test_no_limit_leaves_the_backend_unwrapped(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path / "store")
    assert throttled(local, None, None) is local
