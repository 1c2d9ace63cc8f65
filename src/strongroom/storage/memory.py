"""An in-memory backend: for tests and for dry runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from strongroom.errors import ObjectExists, ObjectNotFound
from strongroom.storage.base import Capabilities, Content, ObjectInfo, check_name, content_bytes


class MemoryBackend:
    """Objects in a dict; thread-safe; gone when the process ends."""

    capabilities = Capabilities(parallel_requests=4)

    def __init__(self, location: str = "memory://") -> None:
        self.location = location
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, name: str, data: Content) -> None:
        blob = content_bytes(data)
        with self._lock:
            self._objects[check_name(name)] = blob

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if check_name(name) in self._objects:
                raise ObjectExists(f"object {name} already exists")
            self._objects[name] = bytes(data)

    def _fetch(self, name: str) -> bytes:
        try:
            return self._objects[check_name(name)]
        except KeyError:
            raise ObjectNotFound(f"object {name} not found in {self.location}") from None

    def get(self, name: str) -> bytes:
        return self._fetch(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._fetch(name)[offset : offset + length]

    def size(self, name: str) -> int:
        return len(self._fetch(name))

    def exists(self, name: str) -> bool:
        return check_name(name) in self._objects

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [(n, len(b)) for n, b in self._objects.items() if n.startswith(prefix)]
        for name, size in sorted(items):
            yield ObjectInfo(name, size)

    def delete(self, name: str) -> None:
        with self._lock:
            if self._objects.pop(check_name(name), None) is None:
                raise ObjectNotFound(f"object {name} not found in {self.location}")

    def close(self) -> None:
        pass
