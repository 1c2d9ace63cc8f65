"""A repository in a local folder (or any mounted filesystem).

Atomic writes (strongroom/atomic.py): data goes to `tmp/<random>`, is fsynced,
then renamed (put) or hard-linked (create, which must fail if the name exists)
into place, and the directory is fsynced, so a crash leaves either the whole
object or nothing but a temporary file that `list` never shows.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

from strongroom.atomic import PendingFile, sync_dir
from strongroom.errors import (
    InvalidObjectName,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
)
from strongroom.storage.base import Capabilities, Content, ObjectInfo, check_name

TMP_DIR = "tmp"
_MAX_OPEN_FILES = 64


def _storage_error(err: OSError, what: str) -> StorageError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"no space left on the repository's disk while {what}")
    return StorageError(f"{what}: {err.strerror or err}")


class LocalBackend:
    """Objects as files below `root`; thread-safe."""

    capabilities = Capabilities(
        atomic_create=True, ranged_get=True, listing_consistent=True, parallel_requests=2
    )

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.location = self.root
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._fd_lock = threading.Lock()
        self._made_dirs: set[str] = set()

    # --- helpers -------------------------------------------------------------

    def _path(self, name: str) -> str:
        if check_name(name).split("/", 1)[0] == TMP_DIR:
            raise InvalidObjectName(f"object name {name!r} is reserved for temporary files")
        return os.path.join(self.root, name)

    def _ensure_dir(self, path: str) -> None:
        """Create `path` if needed, durably: its entry in the parent is fsynced too."""
        if path in self._made_dirs:
            return
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            sync_dir(os.path.dirname(path))
        self._made_dirs.add(path)

    # --- contract ------------------------------------------------------------

    def put(self, name: str, data: Content) -> None:
        self._write_whole(name, data, exclusive=False)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._write_whole(name, data, exclusive=True)

    def _write_whole(self, name: str, data: Content, exclusive: bool) -> None:
        self._path(name)  # reject a bad name before writing anything
        temp = self.open_temp()
        for part in data if isinstance(data, list) else [data]:
            temp.write(part)
        temp.commit(name, exclusive=exclusive)

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"object {name} not found in {self.location}") from None
        except OSError as err:
            raise _storage_error(err, f"reading {name}") from err

    def _open_cached(self, name: str) -> int:
        with self._fd_lock:
            fd = self._fds.get(name)
            if fd is not None:
                self._fds.move_to_end(name)
                return fd
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(f"object {name} not found in {self.location}") from None
        with self._fd_lock:
            if name in self._fds:  # another thread won the race
                os.close(fd)
                return self._fds[name]
            self._fds[name] = fd
            while len(self._fds) > _MAX_OPEN_FILES:
                _, old = self._fds.popitem(last=False)
                os.close(old)
        return fd

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = self._open_cached(name)
            try:
                return os.pread(fd, length, offset)
            except OSError as err:
                if err.errno != errno.EBADF:
                    raise
                # The LRU closed it under us: open privately.
                fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    return os.pread(fd, length, offset)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            raise ObjectNotFound(f"object {name} not found in {self.location}") from None
        except OSError as err:
            raise _storage_error(err, f"reading {name}") from err

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"object {name} not found in {self.location}") from None

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root
        top = prefix.rstrip("/").rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(base, top) if top else base
        if not os.path.isdir(start):
            return
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, base)
            if rel_dir == TMP_DIR or rel_dir.startswith(TMP_DIR + os.sep):
                dirnames[:] = []
                continue
            dirnames.sort()
            for fname in sorted(filenames):
                rel = fname if rel_dir == "." else f"{rel_dir}/{fname}"
                if not rel.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, fname)).st_size
                except FileNotFoundError:
                    continue  # deleted while listing
                yield ObjectInfo(rel, size)

    def delete(self, name: str) -> None:
        path = self._path(name)
        with self._fd_lock:
            fd = self._fds.pop(name, None)
            if fd is not None:
                os.close(fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise ObjectNotFound(f"object {name} not found in {self.location}") from None
        except OSError as err:
            raise _storage_error(err, f"deleting {name}") from err

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def open_temp(self) -> _LocalTemp:
        """A temporary file in `tmp/` that `commit` fsyncs and renames into place."""
        tmp_dir = os.path.join(self.root, TMP_DIR)
        self._ensure_dir(tmp_dir)
        try:
            pending = PendingFile(tmp_dir)
        except OSError as err:
            raise _storage_error(err, "creating a temporary object") from err
        return _LocalTemp(self, pending)

    def clean_temporary(self) -> int:
        """Remove temporary files left by killed writers; returns how many."""
        tmp_dir = os.path.join(self.root, TMP_DIR)
        removed = 0
        if os.path.isdir(tmp_dir):
            for entry in os.scandir(tmp_dir):
                _unlink_quietly(entry.path)
                removed += 1
        return removed


class _LocalTemp:
    """A `PendingFile` in `tmp/`, with the backend's names and errors."""

    def __init__(self, backend: LocalBackend, pending: PendingFile) -> None:
        self._backend = backend
        self._pending = pending

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._pending.write(data)
        except OSError as err:
            self.abort()
            raise _storage_error(err, "writing a temporary object") from err

    def skip(self, length: int) -> None:
        """Leave `length` bytes of zeros, as a hole: a sparse file stays sparse."""
        self._pending.skip(length)

    def commit(self, name: str, exclusive: bool = False) -> None:
        """fsync, then rename into place; with `exclusive`, hard-link instead, which
        fails atomically if `name` exists (ObjectExists)."""
        path = self._backend._path(name)
        try:
            self._backend._ensure_dir(os.path.dirname(path))
            self._pending.commit(path, exclusive=exclusive)
        except FileExistsError:
            raise ObjectExists(f"object {name} already exists") from None
        except OSError as err:
            self.abort()
            raise _storage_error(err, f"writing {name}") from err

    def abort(self) -> None:
        self._pending.abort()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
