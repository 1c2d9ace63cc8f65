"""Recursive inotify watches on a directory tree, through ctypes (no C extension).

`TreeWatch` turns the kernel's events into journal changes: (Kind, path relative
to the tree). Why each rule:

- inotify watches one directory, not a subtree: every directory gets a watch,
  and a directory that appears (created, or renamed into the tree) is watched
  then listed once; every entry the listing finds is recorded as created, which
  closes the race of files made before its watch existed.
- A directory's watch follows its inode, so a renamed directory keeps its watches
  under a stale path: `inotify_add_watch` on an already watched inode returns
  the same descriptor, so re-adding the renamed-to subtree re-maps them.
- Anything that can lose an event (IN_Q_OVERFLOW, a watch the kernel refused:
  the fs.inotify.max_user_watches limit, the tree's root moved or removed)
  yields an OUT_OF_SYNC change with the reason; while a directory is left
  unwatched, `unwatched` is true and the tracker keeps marking every cycle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import struct

from strongroom.errors import SourceError
from strongroom.sources.btrfs import ignored_folder, is_ignored
from strongroom.trackers.journal import Kind

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
_EVENT = struct.Struct("iIII")
_KINDS = (
    (IN_CREATE, Kind.CREATED),
    (IN_DELETE, Kind.DELETED),
    (IN_MOVED_FROM, Kind.RENAMED_FROM),
    (IN_MOVED_TO, Kind.RENAMED_TO),
    (IN_MODIFY | IN_CLOSE_WRITE, Kind.MODIFIED),
    (IN_ATTRIB, Kind.ATTRIB),
)

Change = tuple[Kind, bytes]

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


class FolderBell:
    """An inotify watch on one folder that becomes readable when a file is
    written or renamed into it: how a cycle's barrier wakes a tracker that
    otherwise drains its tree's events only once per batch."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.fd: int = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise SourceError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW
        if _libc.inotify_add_watch(self.fd, os.fsencode(folder), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise SourceError(f"inotify: {os.fsdecode(os.fsencode(folder))}: {os.strerror(err)}")

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> None:
        try:
            while os.read(self.fd, 1 << 12):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


class TreeWatch:
    """Watches every directory below `root`; `read()` returns the changes queued."""

    backend = "inotify"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fsencode(os.path.abspath(root))
        if not os.path.isdir(self.root):
            raise SourceError(f"{os.fsdecode(self.root)}: not a directory")
        self.fd: int = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise SourceError(f"inotify_init1: {os.strerror(err)}")
        self.paths: dict[int, bytes] = {}  # watch descriptor -> relative path
        self.unwatched = False
        self.root_lost: str | None = None
        self.pending: list[Change] = []
        self.ignored = ignored_folder(
            os.fsdecode(self.root)
        )  # btrfs snapshots of the cycles: never watched
        self._add_tree(b"", record=False)

    def fileno(self) -> int:
        return int(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def problem(self) -> str | None:
        """Why changes may be missed from now on (at each cycle's barrier), or None."""
        if not self.unwatched:
            return None
        return self.root_lost or "some directories are not watched"

    def _add(self, rel: bytes) -> bool:
        path = _join(self.root, rel) if rel else self.root
        wd = _libc.inotify_add_watch(self.fd, path, MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone again: its deletion is (or will be) recorded
            self.unwatched = True
            why = "watch limit reached" if err == errno.ENOSPC else os.strerror(err)
            where = os.fsdecode(rel or b".")
            self.pending.append((Kind.OUT_OF_SYNC, f"inotify: {where}: {why}".encode()))
            return False
        self.paths[wd] = rel
        return True

    def _add_tree(self, rel: bytes, record: bool) -> None:
        """Watch `rel` and every directory below it, then list each (after its
        watch exists); with `record`, every entry found is a created change."""
        stack = [rel]
        while stack:
            current = stack.pop()
            if is_ignored(current, self.ignored) or not self._add(current):
                continue
            try:
                with os.scandir(_join(self.root, current) if current else self.root) as it:
                    for entry in it:
                        child = _join(current, os.fsencode(entry.name))
                        if is_ignored(child, self.ignored):
                            continue
                        if record:
                            self.pending.append((Kind.CREATED, child))
                        try:
                            is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
                        except OSError:
                            continue
                        if is_dir:
                            stack.append(child)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as err:
                self.unwatched = True
                reason = f"inotify: cannot list {os.fsdecode(current or b'.')}: {err.strerror}"
                self.pending.append((Kind.OUT_OF_SYNC, reason.encode()))

    def read(self) -> list[Change]:
        """Every change queued in the kernel now (until it would block)."""
        data = bytearray()
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        changes, self.pending = self.pending, []
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            name = bytes(data[pos : pos + length]).rstrip(b"\0")
            pos += length
            self._event(wd, mask, name, changes)
            changes += self.pending
            self.pending = []
        return changes

    def _event(self, wd: int, mask: int, name: bytes, out: list[Change]) -> None:
        if mask & IN_Q_OVERFLOW:
            out.append((Kind.OUT_OF_SYNC, b"inotify queue overflowed (IN_Q_OVERFLOW)"))
            return
        if mask & IN_IGNORED:
            self.paths.pop(wd, None)
            return
        parent = self.paths.get(wd)
        if parent is None:
            return  # a watch removed meanwhile (its directory left the tree)
        if not name:
            if parent == b"" and mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                self.unwatched = True
                self.root_lost = "the tree's root was moved or deleted"
                out.append((Kind.OUT_OF_SYNC, self.root_lost.encode()))
            return  # a directory's own events also reach its parent, with a name
        rel = _join(parent, name)
        if is_ignored(rel, self.ignored):
            return
        for bit, kind in _KINDS:
            if mask & bit:
                out.append((kind, rel))
        if mask & IN_ISDIR:
            if mask & IN_MOVED_FROM:
                self._forget(rel)
            if mask & (IN_CREATE | IN_MOVED_TO):
                self._add_tree(rel, record=True)

    def _forget(self, rel: bytes) -> None:
        """Stop watching a subtree that left the tree (or moved within it: it is
        re-added under its new name by the IN_MOVED_TO that follows)."""
        prefix = rel + b"/"
        for wd, path in list(self.paths.items()):
            if path == rel or path.startswith(prefix):
                del self.paths[wd]
                _libc.inotify_rm_watch(self.fd, wd)
