"""Which files a process read, from the kernel's point of view (inotify via ctypes).

Implementation-agnostic evidence that an incremental backup reads no unchanged
file: the kernel reports IN_ACCESS for every read(2) of a watched file, even
with O_NOATIME, and whoever the reader is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

IN_ACCESS = 0x00000001
IN_OPEN = 0x00000020
IN_ISDIR = 0x40000000
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class FileReads:
    """Watch every directory below `root`; `reads()` returns the relative paths of
    regular files read since the watch started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.dirs: dict[int, Path] = {}
        for dirpath, _dirnames, _files in os.walk(root):
            wd = _libc.inotify_add_watch(self.fd, os.fsencode(dirpath), IN_ACCESS | IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {dirpath}")
            self.dirs[wd] = Path(dirpath)

    def _events(self) -> list[tuple[int, int, bytes]]:
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        events = []
        pos = 0
        while pos < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            name = data[pos : pos + length].rstrip(b"\0")
            pos += length
            events.append((wd, mask, name))
        return events

    def reads(self) -> set[str]:
        """Relative paths of files that were read (directories are ignored)."""
        found = set()
        for wd, mask, name in self._events():
            assert not mask & IN_Q_OVERFLOW, "inotify queue overflowed"
            if mask & IN_ACCESS and not mask & IN_ISDIR and name:
                path = self.dirs[wd] / os.fsdecode(name)
                found.add(str(path.relative_to(self.root)))
        return found

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> FileReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
