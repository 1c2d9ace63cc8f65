"""One fanotify mark on the tree's whole file system, through ctypes (no C extension).

`FsWatch` has `TreeWatch`'s interface (trackers/inotify.py) and turns fanotify's
directory-entry events into journal changes: (Kind, path relative to the tree).
Why fanotify where the kernel offers it (5.9+: FAN_REPORT_DFID_NAME; root, as
resolving a directory handle needs CAP_DAC_READ_SEARCH):

- one FAN_MARK_FILESYSTEM mark covers every directory of the file system:
  nothing to add per directory, no fs.inotify.max_user_watches limit, no race
  with a directory created and filled before its watch exists, no stale paths
  after a directory rename.
- every event names its directory by a file handle and the entry by its name;
  the handle is resolved to a path when the event is read (open_by_handle_at
  on the tree's mount, then /proc/self/fd), so a path is the directory's path
  *now*: a change inside a directory renamed meanwhile is recorded under the
  new name (the rename itself is recorded too, and a cycle walks a renamed
  directory whole). Events outside the tree are dropped; a directory removed
  meanwhile (stale handle, or no links left) is skipped, its removal being
  recorded by its parent's event.

What can lose an event yields an OUT_OF_SYNC change: FAN_Q_OVERFLOW (the queue
holds fs.fanotify.max_queued_events, 16384 by default, for the whole file
system), the tree's root moved or removed, a file system mounted below the tree
(the mark does not cover it), a handle that cannot be resolved for another
reason. `problem()` reports the lasting ones at each cycle's barrier.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct

from strongroom.errors import SourceError
from strongroom.sources.btrfs import ignored_folder, is_ignored
from strongroom.trackers.journal import Kind, path_ok

FAN_CLASS_NOTIF = 0x00000000
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_REPORT_DIR_FID = 0x00000400
FAN_REPORT_NAME = 0x00000800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
FAN_MARK_ADD = 0x00000001
FAN_MARK_FILESYSTEM = 0x00000100

FAN_MODIFY = 0x00000002
FAN_ATTRIB = 0x00000004
FAN_CLOSE_WRITE = 0x00000008
FAN_MOVED_FROM = 0x00000040
FAN_MOVED_TO = 0x00000080
FAN_CREATE = 0x00000100
FAN_DELETE = 0x00000200
FAN_Q_OVERFLOW = 0x00004000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000

FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
FANOTIFY_METADATA_VERSION = 3

MASK = (
    FAN_CREATE
    | FAN_DELETE
    | FAN_MOVED_FROM
    | FAN_MOVED_TO
    | FAN_MODIFY
    | FAN_ATTRIB
    | FAN_CLOSE_WRITE
    | FAN_ONDIR
    | FAN_EVENT_ON_CHILD
)
_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO = struct.Struct("=BBH")  # info_type, pad, len
_FID = struct.Struct("=iiIi")  # fsid[2], handle_bytes, handle_type
MAX_HANDLE = 128  # MAX_HANDLE_SZ
_KINDS = (
    (FAN_CREATE, Kind.CREATED),
    (FAN_DELETE, Kind.DELETED),
    (FAN_MOVED_FROM, Kind.RENAMED_FROM),
    (FAN_MOVED_TO, Kind.RENAMED_TO),
    (FAN_MODIFY | FAN_CLOSE_WRITE, Kind.MODIFIED),
    (FAN_ATTRIB, Kind.ATTRIB),
)

Change = tuple[Kind, bytes]

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.name_to_handle_at.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]


def _error(call: str) -> SourceError:
    return SourceError(f"fanotify: {call}: {os.strerror(ctypes.get_errno())}")


def _handle_of(path: bytes) -> bytes:
    """`struct file_handle` (handle_bytes, handle_type, f_handle) of `path`."""
    buf = ctypes.create_string_buffer(struct.pack("=Ii", MAX_HANDLE, 0) + bytes(MAX_HANDLE))
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(-100, path, buf, ctypes.byref(mount_id), 0) < 0:  # AT_FDCWD
        raise _error(f"name_to_handle_at {os.fsdecode(path)}")
    size = struct.unpack_from("=I", buf.raw)[0]
    return buf.raw[: 8 + size]


def mounts_below(root: bytes) -> list[bytes]:
    """Mount points strictly below `root` (from /proc/self/mountinfo, whose
    paths escape space, tab, newline and backslash as octal)."""
    prefix = root.rstrip(b"/") + b"/"
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) < 5:
                continue
            point = fields[4]
            for code in (b"\\040", b"\\011", b"\\012", b"\\134"):
                point = point.replace(code, bytes([int(code[1:], 8)]))
            if point.startswith(prefix):
                found.append(point)
    return found


class FsWatch:
    """Watches the file system of `root`; `read()` returns the changes below
    `root` queued since. Raises SourceError when fanotify cannot track it (not
    root, an old kernel, a file system without file handles, mounts below)."""

    backend = "fanotify"
    ignored: bytes | None = None  # the btrfs snapshot folder inside the tree (sources/btrfs.py)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fsencode(os.path.realpath(root))
        if not os.path.isdir(self.root):
            raise SourceError(f"{os.fsdecode(self.root)}: not a directory")
        self.prefix = self.root.rstrip(b"/") + b"/"
        below = mounts_below(self.root)
        if below:
            where = os.fsdecode(below[0])
            raise SourceError(f"fanotify: {where} is mounted below the tree (one mark, one fs)")
        self.mount_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = -1
        try:
            self.root_handle = _handle_of(self.root)
            if self._resolve(self.root_handle) != self.root:
                raise SourceError(f"fanotify: cannot resolve {os.fsdecode(self.root)} by handle")
            flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME
            self.fd = _libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE)
            if self.fd < 0:
                raise _error("fanotify_init")
            how = FAN_MARK_ADD | FAN_MARK_FILESYSTEM
            if _libc.fanotify_mark(self.fd, how, MASK, -100, self.root) < 0:
                raise _error(f"fanotify_mark {os.fsdecode(self.root)}")
        except BaseException:
            self.close()
            raise
        self.lost: str | None = None  # a lasting reason changes are missed
        self.ignored = ignored_folder(os.fsdecode(self.root))  # btrfs snapshots of the cycles

    def fileno(self) -> int:
        return int(self.fd)

    def close(self) -> None:
        for fd in (self.fd, self.mount_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.mount_fd = -1

    def problem(self) -> str | None:
        """Why changes below the tree may be missed from now on, or None (checked
        at each cycle's barrier: the root's place, mounts below it)."""
        if self.lost is None:
            try:
                here = self._resolve(self.root_handle)
            except OSError:
                here = None
            if here != self.root:
                self.lost = "the tree's root was moved or deleted"
            elif below := mounts_below(self.root):
                self.lost = f"fanotify: {os.fsdecode(below[0])} is mounted below the tree"
        return self.lost

    def _resolve(self, handle: bytes) -> bytes | None:
        """The directory's path now, or None when it is gone (stale handle, no
        links left). OSError for any other failure."""
        fd = _libc.open_by_handle_at(self.mount_fd, handle, os.O_PATH | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err in (errno.ESTALE, errno.ENOENT):
                return None
            raise OSError(err, os.strerror(err))
        try:
            if os.fstat(fd).st_nlink == 0:
                return None
            return os.readlink(f"/proc/self/fd/{fd}".encode())
        finally:
            os.close(fd)

    def read(self) -> list[Change]:
        """Every change below the tree queued in the kernel now (until it would block)."""
        changes: list[Change] = []
        paths: dict[bytes, bytes | None] = {}  # handle -> path, for this batch
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            pos = 0
            while pos + _METADATA.size <= len(data):
                length, vers, _r, meta_len, mask, fd, _pid = _METADATA.unpack_from(data, pos)
                bad = length < meta_len or pos + length > len(data)
                if vers != FANOTIFY_METADATA_VERSION or bad:
                    changes.append((Kind.OUT_OF_SYNC, b"fanotify: unexpected event layout"))
                    break
                if fd >= 0:
                    os.close(fd)  # never with FAN_REPORT_*FID; closed for safety
                self._event(mask, data[pos + meta_len : pos + length], paths, changes)
                pos += length
        return changes

    def _event(
        self, mask: int, info: bytes, paths: dict[bytes, bytes | None], out: list[Change]
    ) -> None:
        if mask & FAN_Q_OVERFLOW:
            out.append((Kind.OUT_OF_SYNC, b"fanotify queue overflowed (FAN_Q_OVERFLOW)"))
            return
        pos = 0
        while pos + _INFO.size <= len(info):
            kind, _pad, length = _INFO.unpack_from(info, pos)
            if length < _INFO.size or pos + length > len(info):
                return
            record = info[pos : pos + length]
            pos += length
            if kind not in (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_DFID):
                continue
            if len(record) < _INFO.size + _FID.size:
                continue
            _f0, _f1, size, _type = _FID.unpack_from(record, _INFO.size)
            end = _INFO.size + _FID.size + size
            if size > MAX_HANDLE or end > len(record):
                continue
            handle = record[_INFO.size + 8 : end]
            name = record[end:].split(b"\0", 1)[0] if kind == FAN_EVENT_INFO_TYPE_DFID_NAME else b""
            self._change(mask, handle, name, paths, out)

    def _change(
        self,
        mask: int,
        handle: bytes,
        name: bytes,
        paths: dict[bytes, bytes | None],
        out: list[Change],
    ) -> None:
        if handle not in paths:
            try:
                paths[handle] = self._resolve(handle)
            except OSError as err:
                paths[handle] = None
                reason = f"fanotify: cannot resolve a directory: {err.strerror}"
                out.append((Kind.OUT_OF_SYNC, reason.encode()))
        directory = paths[handle]
        if directory is None:
            return
        path = directory if name in (b"", b".") else directory.rstrip(b"/") + b"/" + name
        if path == self.root:
            if mask & (FAN_DELETE | FAN_MOVED_FROM) and name not in (b"", b"."):
                self.lost = "the tree's root was moved or deleted"
                out.append((Kind.OUT_OF_SYNC, self.lost.encode()))
            return  # the root's own metadata: no journal path names it
        if not path.startswith(self.prefix):
            return
        rel = path[len(self.prefix) :]
        if not path_ok(rel):  # a kernel name never holds '/' or NUL: bounded anyway
            out.append((Kind.OUT_OF_SYNC, b"fanotify: an event with an invalid name"))
            return
        if is_ignored(rel, self.ignored):
            return
        for bit, kind in _KINDS:
            if mask & bit:
                out.append((kind, rel))
