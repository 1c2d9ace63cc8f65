"""Every backend passes the same contract suite (strongroom.storage.testing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import InvalidObjectName, StorageFull, UsageError
from strongroom.storage import Backend, open_backend
from strongroom.storage.base import StreamingPut
from strongroom.storage.local import LocalBackend
from strongroom.storage.memory import MemoryBackend
from strongroom.storage.testing import BackendContract, FaultyBackend


class TestLocalBackend(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        backend = LocalBackend(tmp_path / "store")
        yield backend
        backend.close()


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield MemoryBackend()


class TestFaultyBackendWithRoom(BackendContract):
    """The fault injector is transparent until its space runs out."""

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield FaultyBackend(MemoryBackend(), space=1 << 40)


def test_faulty_backend_fails_writes_beyond_its_space() -> None:
    inner = MemoryBackend()
    faulty = FaultyBackend(inner, space=10)
    faulty.put("a", b"12345")
    with pytest.raises(StorageFull):
        faulty.put("b", b"123456")
    assert not inner.exists("b")  # nothing partial
    faulty.create("c", b"12345")
    with pytest.raises(StorageFull):
        faulty.create("d", b"x")


def test_local_temporary_files_are_invisible_and_cleanable(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("data/00/obj", b"x")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "tmp" / "leftover").write_bytes(b"half a pack")
    assert [o.name for o in backend.list("")] == ["data/00/obj"]
    with pytest.raises(InvalidObjectName):
        backend.put("tmp/leftover", b"x")
    assert backend.clean_temporary() == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_local_streaming_put_commits_atomically(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    assert isinstance(backend, StreamingPut)
    temp = backend.open_temp()
    temp.write(b"abc")
    temp.write(memoryview(b"def"))
    assert list(backend.list("")) == []  # invisible until commit
    temp.commit("data/aa/streamed")
    assert backend.get("data/aa/streamed") == b"abcdef"
    assert list((tmp_path / "tmp").iterdir()) == []

    aborted = backend.open_temp()
    aborted.write(b"discard me")
    aborted.abort()
    aborted.abort()  # idempotent
    assert [o.name for o in backend.list("")] == ["data/aa/streamed"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_local_objects_are_files_under_the_root(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("index/abc", b"content")
    assert (tmp_path / "index" / "abc").read_bytes() == b"content"


def test_open_backend_by_location(tmp_path: Path) -> None:
    assert isinstance(open_backend(str(tmp_path)), LocalBackend)
    local = open_backend(f"file://{tmp_path}")
    assert isinstance(local, LocalBackend) and local.root == str(tmp_path)
    assert isinstance(open_backend("memory://test"), MemoryBackend)
    with pytest.raises(UsageError):
        open_backend("ftp://host/path")  # s3: is tested in test_s3.py
