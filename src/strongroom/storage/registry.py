"""Turn a repository location into a backend; backends import lazily.

A location is never misread: anything that starts like a URL scheme
(`WORD:`, e.g. `b2:bucket:path`, `azure:container:/`) and is not
one strongroom supports is refused, never taken as a local folder named
`b2:bucket:` that would keep the "off-site" backups on this disk. A
local folder whose name really starts that way is reached as `./b2:...` or
by its absolute path.
"""

from __future__ import annotations

import os
import re

from strongroom.errors import UsageError
from strongroom.storage.base import Backend

SUPPORTED = (
    "a folder path, file://PATH, s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX], "
    "s3://BUCKET[/PREFIX], sftp:[USER@]HOST:PATH, sftp://[USER@]HOST[:PORT]//PATH, "
    "rclone:REMOTE:PATH or memory://NAME"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def check_location(location: str, what: str = "repository location") -> None:
    """UsageError (exit 2) for a location that names a scheme strongroom does not
    support, or that is empty; the message names the supported ones."""
    if not location:
        raise UsageError(f"{what} is empty: use {SUPPORTED}")
    if location.startswith(("memory://", "s3:", "file://", "sftp:", "rclone:")):
        return
    found = _SCHEME.match(location)
    if found:
        scheme = found.group(0)
        raise UsageError(
            f"{what} {location!r}: {scheme} is not a storage strongroom supports "
            f"(use {SUPPORTED}); a local folder named {scheme}... is written ./{location}"
        )


def open_backend(location: str, what: str = "repository location") -> Backend:
    """Open the backend for `location`: a path, `file://PATH`, `memory://NAME`, an
    S3 bucket (`s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`, `s3://BUCKET[/PREFIX]`) or
    a folder over SFTP (`sftp:[USER@]HOST:PATH`, `sftp://[USER@]HOST[:PORT]//PATH`)
    or any remote rclone knows (`rclone:REMOTE:PATH`).
    Anything else that looks like `SCHEME:` is refused (`check_location`).

    Wrappers (retry, logging) are applied here, in one place, as they arrive.
    """
    check_location(location, what)
    if location.startswith("memory://"):
        from strongroom.storage.memory import MemoryBackend

        return MemoryBackend(location)
    if location.startswith("s3:"):
        from strongroom.storage.s3 import S3Backend

        return S3Backend(location)
    if location.startswith("sftp:"):
        from strongroom.storage.sftp import SftpBackend

        return SftpBackend(location)
    if location.startswith("rclone:"):
        from strongroom.storage.sftp import RcloneBackend

        return RcloneBackend(location)
    if location.startswith("file://"):
        location = location[len("file://") :]
        if not location:
            raise UsageError(f"{what} file:// names no folder: use file:///PATH")
    from strongroom.storage.local import LocalBackend

    return LocalBackend(os.path.expanduser(location))
