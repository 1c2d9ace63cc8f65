"""The storage contract every backend fulfils.

A backend stores named objects. Names are slash-separated, lowercase ASCII
(`data/3f/3f9a…`, `keys/…`, `config`); `check_name` enforces it so that no
backend ever sees a path trick. Objects are written whole and atomically
(readers never see half an object) and are never modified once written: the
repository only creates and deletes. Backends are synchronous and safe to call
from several threads at once; concurrency lives in the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from strongroom.errors import IntegrityError, InvalidObjectName

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}(/[a-z0-9][a-z0-9_.-]{0,127}){0,7}$")


def check_name(name: str) -> str:
    """Return `name` if it is a valid object name, else raise InvalidObjectName."""
    if not _NAME.match(name) or ".." in name:
        raise InvalidObjectName(f"invalid object name {name!r}")
    return name


Buffer: TypeAlias = bytes | bytearray | memoryview
# An object's content: one buffer, or parts written in order (a gather write,
# so a pack of many chunks is never copied into one buffer).
Content: TypeAlias = Buffer | list[bytes] | list[bytes | bytearray] | list[Buffer]


def content_length(data: Content) -> int:
    if isinstance(data, list):
        return sum(len(part) for part in data)
    return len(data)


def content_bytes(data: Content) -> bytes:
    if isinstance(data, list):
        return b"".join(data)
    return bytes(data)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the core contract; callers ask, never isinstance.

    - atomic_create: `create` is atomic exclusive (no two callers both succeed).
    - ranged_get: `get_range` reads part of an object without fetching all of it.
    - listing_consistent: a `list` right after a write shows it.
    - parallel_requests: how many requests it is worth keeping in flight.
    - remote: every read crosses a network (S3, SFTP, rclone): worth a local
      cache of the immutable objects a command reads again (index files,
      points, trees; repository/repo.py `attach_cache`).
    """

    atomic_create: bool = True
    ranged_get: bool = True
    listing_consistent: bool = True
    parallel_requests: int = 2
    remote: bool = False


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int


class TempObject(Protocol):
    """An object being written piece by piece; invisible until `commit`."""

    def write(self, data: Buffer) -> None:
        """Append `data`; StorageFull when out of space."""
        ...

    def commit(self, name: str) -> None:
        """Make the object durable and visible under `name`, atomically."""
        ...

    def abort(self) -> None:
        """Discard what was written; idempotent."""
        ...


@runtime_checkable
class SparseTemp(Protocol):
    """Optional ability of a temporary object: `skip(n)` stands for n zero bytes
    without writing them (a hole in a local file)."""

    def skip(self, length: int) -> None: ...


@runtime_checkable
class StreamingPut(Protocol):
    """Optional ability: write an object as a stream instead of from memory, so a
    pack being filled costs no memory. Callers probe for it; others use `put`."""

    def open_temp(self) -> TempObject: ...


@runtime_checkable
class Backend(Protocol):
    """Named immutable objects. Every method may raise StorageError subclasses."""

    location: str

    @property
    def capabilities(self) -> Capabilities:
        """What it can do beyond the core contract (an attribute or a property)."""
        ...

    def put(self, name: str, data: Content) -> None:
        """Store `data` (one buffer or a list of parts) under `name` atomically and
        durably (fsynced when it returns).

        Overwriting an existing object is allowed only with identical content
        (content-addressed names make re-puts idempotent). Raises StorageFull
        when out of space; nothing partial remains.
        """
        ...

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Like `put`, but fail with ObjectExists if `name` exists (used for locks, keys)."""
        ...

    def get(self, name: str) -> bytes:
        """Return the whole object; ObjectNotFound if missing."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Return `length` bytes from `offset`; fewer only at the object's end."""
        ...

    def size(self, name: str) -> int:
        """Return the object's size in bytes; ObjectNotFound if missing."""
        ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object whose name starts with `prefix` (e.g. `data/`), any order."""
        ...

    def delete(self, name: str) -> None:
        """Remove an object; ObjectNotFound if it was not there."""
        ...

    def close(self) -> None:
        """Release resources (open files, connections); idempotent."""
        ...


class ForwardingBackend:
    """A backend that hands every call to `inner`: the base of wrappers that change
    a few calls (throttling, fault injection). `capabilities` is read from `inner`
    each time, so a capability the inner backend learns later (S3's conditional
    writes, an SFTP server's rename) shows through the wrapper too."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def put(self, name: str, data: Content) -> None:
        self.inner.put(name, data)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.create(name, data)

    def get(self, name: str) -> bytes:
        return self.inner.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(name, offset, length)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def close(self) -> None:
        self.inner.close()


# Above this bound `get_bounded` asks for the object's size first rather than
# requesting `limit` + 1 bytes (a local read allocates what it is asked for).
_ASK_SIZE_ABOVE = 1 << 20


def get_bounded(backend: Backend, name: str, limit: int, size: int | None = None) -> bytes:
    """The whole object `name`, never reading more than `limit` + 1 bytes of it.

    Everything read whole from storage goes through here: a planted
    multi-GiB object under a lock's, point's or index file's name is refused
    with IntegrityError instead of exhausting memory. `size` is the size a
    listing gave, if known (saves asking); it is a hint only, the read itself
    is bounded. ObjectNotFound if missing."""
    if size is None and limit > _ASK_SIZE_ABOVE:
        size = backend.size(name)
    if size is not None and size > limit:
        raise IntegrityError(f"{name} is larger than {limit} bytes ({size}; damaged or foreign)")
    want = limit if size is None else max(size, 0)
    data = backend.get_range(name, 0, want + 1)
    if want < len(data) <= limit:  # it grew since it was listed: read on to the bound
        data += backend.get_range(name, len(data), limit + 1 - len(data))
    if len(data) > limit:
        raise IntegrityError(f"{name} is larger than {limit} bytes (damaged or foreign)")
    return data
