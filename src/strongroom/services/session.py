"""Opening a repository for one command: backend, key, lock, index, and closing.

`Repository` is the handle a command holds: the CLI names its type from here,
passes it to services and calls nothing below them (docs/design.md, "Layers").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

from strongroom.errors import UsageError
from strongroom.repository.compress import AUTO
from strongroom.repository.format import DEFAULT_COMPRESSION_LEVEL
from strongroom.repository.keys import MIN_PASSWORD_LENGTH as MIN_PASSWORD_LENGTH
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository as Repository
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
    limit_upload: int | None = None,
    limit_download: int | None = None,
) -> Iterator[Repository]:
    """Open and lock; always unlock and close. The index loads on first use, or
    at once with `load_index`. On remote storage (S3, SFTP, rclone) the index
    files, points and trees read are kept in the local cache
    (`Repository.attach_cache`) unless `--no-cache`/STRONGROOM_NO_CACHE says not.
    `limit_upload`/`limit_download` (bytes/s) hold every write and read of the
    storage from the first (the key file, the index) to the last; reads the
    local cache answers are not held."""
    from strongroom.repository.blob_cache import caching_disabled
    from strongroom.services.impact import limit_backend

    backend = limit_backend(open_backend(location), limit_upload, limit_download)
    try:
        repo = Repository.open(backend, password)
    except BaseException:
        backend.close()
        raise
    if backend.capabilities.remote and not caching_disabled():
        repo.attach_cache()
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
    compression_mode: str = AUTO,
    chunker: tuple[int, int, int] | None = None,
    block_size: int | None = None,
) -> Repository:
    """A new repository; `compression_level` None: the format's default level."""
    backend = open_backend(location)
    try:
        if compression_level is None:
            compression_level = DEFAULT_COMPRESSION_LEVEL
        return Repository.init(
            backend,
            password,
            compression_level=compression_level,
            compression_mode=compression_mode,
            kdf=kdf,
            chunker=chunker,
            block_size=block_size,
        )
    except BaseException:
        backend.close()
        raise


def password_warning(password: bytes) -> str | None:
    """Why `password` is too weak to protect a repository, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"the password is shorter than {MIN_PASSWORD_LENGTH} characters: "
            "anyone who can read the repository can guess it"
        )
    return None


def create_repository(
    location: str,
    password: bytes,
    compression_level: int | None = None,
    *,
    compression_mode: str = AUTO,
    insecure_password: bool = False,
    chunker: tuple[int, int, int] | None = None,
    block_size: int | None = None,
) -> str:
    """Create a repository and close it; returns its key object's name. A password shorter than
    MIN_PASSWORD_LENGTH is refused unless `insecure_password` (the key file is
    public to whoever reads the storage)."""
    weak = password_warning(password)
    if weak and not insecure_password:
        raise UsageError(f"{weak}; choose a longer one, or pass --insecure-password")
    try:
        repo = init_repository(
            location,
            password,
            compression_level,
            compression_mode=compression_mode,
            chunker=chunker,
            block_size=block_size,
        )
    except ValueError as err:  # chunker or block sizes (RepoConfig.geometry_problem)
        raise UsageError(f"cannot create the repository: {err}") from None
    try:
        return repo.key_name
    finally:
        repo.close()


def repository_exists(location: str) -> bool:
    backend = open_backend(location)
    try:
        return backend.exists("config")
    finally:
        backend.close()
