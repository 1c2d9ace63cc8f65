"""Turn a repository location into a backend; backends import lazily."""

from __future__ import annotations

import os

from strongroom.errors import UsageError
from strongroom.storage.base import Backend


def open_backend(location: str) -> Backend:
    """Open the backend for `location`: a path, `file://PATH`, `memory://NAME`, or
    an S3 bucket (`s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`, `s3://BUCKET[/PREFIX]`).

    Wrappers (retry, logging) are applied here, in one place, as they arrive.
    """
    if location.startswith("memory://"):
        from strongroom.storage.memory import MemoryBackend

        return MemoryBackend(location)
    if location.startswith("s3:"):
        from strongroom.storage.s3 import S3Backend

        return S3Backend(location)
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location:
        scheme = location.split("://", 1)[0]
        raise UsageError(f"repository scheme {scheme}:// is not supported yet")
    from strongroom.storage.local import LocalBackend

    return LocalBackend(os.path.expanduser(location))
