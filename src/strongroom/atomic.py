"""Whole-file writes that a crash cannot tear: the one way strongroom replaces a file.

The contract of `atomic_write` and `PendingFile.commit`: after they return, the
new content is on disk under its name, durably (the file is fsynced before the
rename, the folder after it); if they raise, or the process dies at any point,
the name holds its old content (or nothing) and at worst a temporary file is
left behind: a hidden `.<name>.<random>.tmp` beside it, or a random name in the
`temp_dir` the caller cleans. Temporary files are created exclusively
(`O_EXCL`, mode 0600), so two writers never share one.

Standard library only, so every layer may use it (the local storage backend,
the protect state folder, block mode's pending hashes, VHD export).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def sync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the folder `path`, so the names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename `src` over `dst` atomically, then fsync `dst`'s folder (a crash may
    bring back `src`'s old name, a leftover, never lose `dst`)."""
    os.replace(src, dst)
    sync_dir(os.path.dirname(os.path.abspath(dst)))


class PendingFile:
    """A new file `name` (random by default) in `folder` that `commit` makes
    durable and moves into place; `abort` (or any failed `commit`) removes it.

    `file` is a buffered binary file: write to it, or use `write` and `skip`."""

    def __init__(self, folder: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = os.path.join(folder, name or secrets.token_hex(16))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self._open = True
        self._hole_at_end = False  # the last call was `skip`: the size is set at commit

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)
        self._hole_at_end = False

    def skip(self, length: int) -> None:
        """Leave `length` bytes of zeros as a hole: a sparse file stays sparse."""
        self.file.seek(length, os.SEEK_CUR)
        self._hole_at_end = True

    def commit(
        self, dest: str | os.PathLike[str], *, exclusive: bool = False, durable: bool = True
    ) -> None:
        """fsync, then rename over `dest`; with `exclusive`, hard-link instead,
        which raises FileExistsError if `dest` exists (and changes nothing).
        `durable=False` skips both fsyncs: still atomic for readers (a name
        holds the old or the new content), but a crash may leave it empty or
        torn; only for caches whose reader verifies every entry."""
        try:
            if self._hole_at_end:
                self.file.truncate()  # extends the file over the trailing hole
            self.file.flush()
            if durable:
                os.fsync(self.file.fileno())
            self.file.close()
            self._open = False
            if exclusive:
                os.link(self.path, dest)
                _unlink_quietly(self.path)
                if durable:
                    sync_dir(os.path.dirname(os.path.abspath(dest)))
            elif durable:
                durable_replace(self.path, dest)
            else:
                os.replace(self.path, dest)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file; safe to call more than once."""
        if self._open:
            self._open = False
            try:
                self.file.close()
            except OSError:
                pass
        _unlink_quietly(self.path)


def atomic_write(
    path: str | os.PathLike[str],
    writer: Callable[[BinaryIO], object],
    *,
    temp_dir: str | os.PathLike[str] | None = None,
    exclusive: bool = False,
    durable: bool = True,
) -> None:
    """Replace the file at `path` by what `writer` writes to the file it is given,
    atomically and durably (see the module docstring). With `exclusive`, refuse
    (FileExistsError) if `path` exists instead of replacing it; `durable=False`:
    see `PendingFile.commit`."""
    path = os.fspath(path)
    if temp_dir is None:
        folder = os.path.dirname(os.path.abspath(path))
        name = f".{os.path.basename(path)}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
        pending = PendingFile(folder, name)
    else:
        pending = PendingFile(temp_dir)
    try:
        writer(pending.file)
    except BaseException:
        pending.abort()
        raise
    pending.commit(path, exclusive=exclusive, durable=durable)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
