"""The FUSE side of `strongroom mount`: mfusepy (libfuse 3's high-level API) over a RepositoryView.

The only module that imports mfusepy (loaded by `strongroom mount` alone).
Paths arrive as str decoded with surrogateescape and go back to bytes here, so
names that are not UTF-8 survive. Every answer is read-only; errors become
errno values: a missing entry ENOENT, damage found in the repository EIO (and
one line on stderr per distinct message, at most a few dozen).

Unmounting: libfuse's own handlers catch SIGINT, SIGTERM and SIGHUP (Python's
are set aside while the loop runs), end the loop after the requests in
progress, and unmount; `run_fuse` then returns normally. With `auto_unmount`
a `fusermount3` process watches the mount and unmounts it even when this
process is killed, so a SIGKILL does not leave "Transport endpoint is not
connected" behind.
"""

from __future__ import annotations

import errno
import itertools
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import mfusepy

from strongroom.errors import PathNotFound, StrongroomError
from strongroom.model.names import printable
from strongroom.services.mount_view import Handle, RepositoryView

_MAX_REPORTS = 50


def _b(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


class _Ops(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, view: RepositoryView, on_mounted: Callable[[], None]) -> None:
        self.view, self._on_mounted = view, on_mounted
        self._handles: dict[int, Handle] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._reported: set[str] = set()

    def _fail(self, exc: BaseException) -> mfusepy.FuseOSError:
        """The errno for `exc`: a missing entry ENOENT; damage or a repository
        error (a pack gone, storage failing) EIO and one line on stderr."""
        if isinstance(exc, PathNotFound):
            return mfusepy.FuseOSError(errno.ENOENT)
        if not isinstance(exc, StrongroomError):
            if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
                return mfusepy.FuseOSError(exc.errno)
            if isinstance(exc, ValueError):
                return mfusepy.FuseOSError(errno.EINVAL)
        message = str(exc) if isinstance(exc, StrongroomError) else repr(exc)
        with self._lock:
            if message not in self._reported and len(self._reported) < _MAX_REPORTS:
                self._reported.add(message)
                print(f"warning: {printable(message)}", file=sys.stderr, flush=True)
        return mfusepy.FuseOSError(errno.EIO)

    def init(self, path: str) -> None:
        """Called once the file system is mounted: the moment to say so."""
        self._on_mounted()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            a = self.view.getattr(_b(path))
        except Exception as exc:
            raise self._fail(exc) from None
        return {
            "st_mode": a.mode,
            "st_ino": a.ino,
            "st_nlink": a.nlink,
            "st_uid": a.uid,
            "st_gid": a.gid,
            "st_size": a.size,
            "st_blocks": (a.size + 511) // 512,
            "st_atime": a.atime_ns,
            "st_mtime": a.mtime_ns,
            "st_ctime": a.ctime_ns,
            "st_rdev": a.rdev,
        }

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        """Names with their type and inode number: with `use_ino`, libfuse passes
        the number given here, and an entry numbered 0 is skipped by readdir(3)."""
        raw = _b(path)
        try:
            names = self.view.readdir(raw)
        except Exception as exc:
            raise self._fail(exc) from None
        entries: list[str | tuple[str, dict[str, int], int]] = []
        parent = raw.rstrip(b"/").rpartition(b"/")[0]
        for dots, where in ((".", raw), ("..", parent)):
            try:
                a = self.view.getattr(where)
            except Exception:
                a = self.view.root.attr
            entries.append((dots, {"st_mode": a.mode, "st_ino": a.ino}, 0))
        for name in names:
            try:
                a = self.view.getattr(raw.rstrip(b"/") + b"/" + name)
            except Exception as exc:
                self._fail(exc)  # reported; the entry is left out
                continue
            text = name.decode("utf-8", "surrogateescape")
            entries.append((text, {"st_mode": a.mode, "st_ino": a.ino}, 0))
        return entries

    def readlink(self, path: str) -> str:
        try:
            target: str = self.view.readlink(_b(path)).decode("utf-8", "surrogateescape")
        except Exception as exc:
            raise self._fail(exc) from None
        return target

    def listxattr(self, path: str) -> list[str]:
        try:
            names = self.view.xattrs(_b(path))
        except Exception as exc:
            raise self._fail(exc) from None
        return [n.decode("utf-8", "surrogateescape") for n in names]

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        try:
            value = self.view.xattrs(_b(path)).get(_b(name))
        except Exception as exc:
            raise self._fail(exc) from None
        if value is None:
            raise mfusepy.FuseOSError(mfusepy.ENOATTR)
        return value

    def open(self, path: str, flags: int) -> int:
        import os

        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise mfusepy.FuseOSError(errno.EROFS)
        try:
            handle = self.view.open(_b(path))
        except Exception as exc:
            raise self._fail(exc) from None
        with self._lock:
            number = next(self._numbers)
            self._handles[number] = handle
        return number

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._handles.get(fh)
        if handle is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        try:
            return handle.read(offset, size)
        except Exception as exc:
            raise self._fail(exc) from None

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            handle = self._handles.pop(fh, None)
        close = getattr(handle, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                self._fail(exc)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_fuse(
    view: RepositoryView,
    mountpoint: str,
    *,
    allow_other: bool,
    on_mounted: Callable[[], None] = lambda: None,
) -> None:
    """Serve `view` at `mountpoint` until unmounted or signalled (returns then).

    Python's handlers are set to the default while the loop runs, because
    libfuse installs its own only over a default one."""
    saved = {s: signal.getsignal(s) for s in _SIGNALS}
    logging.getLogger("mfusepy").setLevel(logging.CRITICAL)  # errnos are answers, not news
    options: dict[str, Any] = {
        "foreground": True,
        "ro": True,
        "default_permissions": True,  # the stored modes decide who reads what
        "use_ino": True,  # stable inode numbers: hard links show as hard links
        "fsname": "strongroom",
        "subtype": "strongroom",
        "auto_unmount": True,
        "attr_timeout": 60,
        "entry_timeout": 60,
        "kernel_cache": True,  # the content never changes
    }
    if allow_other:
        options["allow_other"] = True
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    try:
        mfusepy.FUSE(_Ops(view, on_mounted), mountpoint, **options)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
