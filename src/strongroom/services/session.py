"""Opening a repository for one command: backend, key, lock, index, and closing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.storage import open_backend


class LockMode(Enum):
    NONE = "none"
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@contextmanager
def open_repository(
    location: str,
    password: bytes,
    *,
    lock: LockMode = LockMode.SHARED,
    load_index: bool = False,
) -> Iterator[Repository]:
    """Open and lock; always unlock and close. The index loads on first use, or
    at once with `load_index`."""
    backend = open_backend(location)
    try:
        repo = Repository.open(backend, password)
    except BaseException:
        backend.close()
        raise
    held = repo.lock(exclusive=lock is LockMode.EXCLUSIVE) if lock is not LockMode.NONE else None
    repo.held_lock = held
    try:
        if load_index:
            repo.load_index()
        yield repo
    finally:
        if held is not None:
            held.release()
        repo.close()


def init_repository(
    location: str,
    password: bytes,
    compression_level: int | None = None,
    kdf: KdfParams | None = None,
) -> Repository:
    backend = open_backend(location)
    try:
        if compression_level is None:
            return Repository.init(backend, password, kdf=kdf)
        return Repository.init(backend, password, compression_level=compression_level, kdf=kdf)
    except BaseException:
        backend.close()
        raise


def repository_exists(location: str) -> bool:
    backend = open_backend(location)
    try:
        return backend.exists("config")
    finally:
        backend.close()
