"""The contract suite every storage backend passes, and fault-injecting wrappers.

Use it from a test module by subclassing `BackendContract` and providing a
`backend` pytest fixture. Kept in the package (not in tests/) so that a new
backend, here or in a plugin, runs exactly the same checks.
"""

from __future__ import annotations

import errno
import threading
from concurrent.futures import ThreadPoolExecutor

from strongroom.errors import (
    InvalidObjectName,
    ObjectExists,
    ObjectNotFound,
    StorageFull,
)
from strongroom.storage.base import (
    Backend,
    Capabilities,
    Content,
    ForwardingBackend,
    content_length,
)


class BackendContract:
    """Tests that hold for every backend. Subclasses provide a `backend` fixture."""

    def test_put_get_roundtrip(self, backend: Backend) -> None:
        backend.put("data/ab/abcd", b"hello")
        assert backend.get("data/ab/abcd") == b"hello"
        assert backend.size("data/ab/abcd") == 5
        assert backend.exists("data/ab/abcd")

    def test_put_accepts_memoryview_and_bytearray(self, backend: Backend) -> None:
        backend.put("a1", memoryview(b"xyz"))
        backend.put("a2", bytearray(b"uvw"))
        assert backend.get("a1") == b"xyz"
        assert backend.get("a2") == b"uvw"

    def test_put_parts_is_a_gather_write(self, backend: Backend) -> None:
        parts: list[bytes | bytearray | memoryview] = [b"ab", bytearray(b"cd"), memoryview(b"ef")]
        backend.put("data/aa/parts", parts)
        assert backend.get("data/aa/parts") == b"abcdef"
        assert backend.size("data/aa/parts") == 6

    def test_put_same_content_twice_is_idempotent(self, backend: Backend) -> None:
        backend.put("index/00", b"same")
        backend.put("index/00", b"same")
        assert backend.get("index/00") == b"same"

    def test_missing_object(self, backend: Backend) -> None:
        assert not backend.exists("nothing")
        for call in (
            lambda: backend.get("nothing"),
            lambda: backend.size("nothing"),
            lambda: backend.get_range("nothing", 0, 1),
            lambda: backend.delete("nothing"),
        ):
            try:
                call()
            except ObjectNotFound as err:
                assert isinstance(err, FileNotFoundError)
            else:
                raise AssertionError("expected ObjectNotFound")

    def test_get_range(self, backend: Backend) -> None:
        backend.put("r", bytes(range(256)))
        assert backend.get_range("r", 10, 5) == bytes(range(10, 15))
        assert backend.get_range("r", 250, 100) == bytes(range(250, 256))

    def test_create_is_exclusive(self, backend: Backend) -> None:
        backend.create("locks/one", b"first")
        try:
            backend.create("locks/one", b"second")
        except ObjectExists:
            pass
        else:
            raise AssertionError("expected ObjectExists")
        assert backend.get("locks/one") == b"first"

    def test_concurrent_create_has_one_winner(self, backend: Backend) -> None:
        wins: list[int] = []
        lock = threading.Lock()

        def attempt(i: int) -> None:
            try:
                backend.create("locks/race", str(i).encode())
            except ObjectExists:
                return
            with lock:
                wins.append(i)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(attempt, range(16)))
        assert len(wins) == 1
        assert backend.get("locks/race") == str(wins[0]).encode()

    def test_list_by_prefix(self, backend: Backend) -> None:
        names = ["data/00/a", "data/01/b", "index/c", "keys/d", "config"]
        for n in names:
            backend.put(n, n.encode())
        listed = sorted(o.name for o in backend.list("data/"))
        assert listed == ["data/00/a", "data/01/b"]
        assert {o.name: o.size for o in backend.list("")} == {n: len(n) for n in names}
        assert list(backend.list("nope/")) == []

    def test_delete(self, backend: Backend) -> None:
        backend.put("points/x", b"1")
        backend.delete("points/x")
        assert not backend.exists("points/x")
        assert list(backend.list("points/")) == []

    def test_rejects_bad_names(self, backend: Backend) -> None:
        for bad in ["../etc/passwd", "/abs", "UPPER", "a//b", "", "a/../b", "sp ace", "tmp/"]:
            try:
                backend.put(bad, b"x")
            except InvalidObjectName:
                pass
            else:
                raise AssertionError(f"accepted bad name {bad!r}")

    def test_large_object(self, backend: Backend) -> None:
        blob = bytes(range(256)) * (64 * 1024)  # 16 MiB
        backend.put("data/ff/big", blob)
        assert backend.get("data/ff/big") == blob
        assert backend.get_range("data/ff/big", 12_345_678, 10) == blob[12_345_678:12_345_688]

    def test_parallel_puts_and_gets(self, backend: Backend) -> None:
        def work(i: int) -> bool:
            name = f"data/{i:02x}/obj{i}"
            backend.put(name, bytes([i]) * 1000)
            return backend.get(name) == bytes([i]) * 1000

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(work, range(64)))

    def test_capabilities_declared(self, backend: Backend) -> None:
        assert isinstance(backend.capabilities, Capabilities)
        assert backend.capabilities.parallel_requests >= 1


class FaultyBackend(ForwardingBackend):
    """Forwards to `inner`, but fails writes once `space` bytes have been written.

    Simulates a full disk (ENOSPC) at an exact point, for tests that prove the
    repository stays consistent when a write fails.
    """

    def __init__(self, inner: Backend, space: int) -> None:
        super().__init__(inner)
        self.space = space
        self._lock = threading.Lock()

    def _charge(self, n: int) -> None:
        with self._lock:
            if n > self.space:
                raise StorageFull(f"no space left ({errno.errorcode[errno.ENOSPC]})")
            self.space -= n

    def put(self, name: str, data: Content) -> None:
        self._charge(content_length(data))
        self.inner.put(name, data)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._charge(len(data))
        self.inner.create(name, data)
