"""Reading a directory tree's entries and metadata, safely and without path limits.

Everything is relative to open directory descriptors (`dir_fd`), so trees deeper
than PATH_MAX and names that are not UTF-8 work, and a directory swapped for a
symlink mid-walk is never followed (O_NOFOLLOW).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from functools import lru_cache

from strongroom.model.tree import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SYMLINK,
    Node,
)

IS_ROOT = os.geteuid() == 0
_O_NOATIME = getattr(os, "O_NOATIME", 0)


def node_type(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISCHR(mode):
        return CHARDEV
    if stat.S_ISBLK(mode):
        return BLOCKDEV
    if stat.S_ISSOCK(mode):
        return SOCKET
    return None


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def node_from_stat(name: bytes, st: os.stat_result) -> Node | None:
    """A node with the entry's metadata; None for a type we cannot represent."""
    kind = node_type(st.st_mode)
    if kind is None:
        return None
    return Node(
        name=name,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        size=st.st_size if kind == FILE else 0,
        inode=st.st_ino,
        device=st.st_dev,
        nlink=st.st_nlink,
        rdev=st.st_rdev if kind in (CHARDEV, BLOCKDEV) else 0,
    )


def proc_path(dir_fd: int, name: bytes) -> bytes:
    """A short path naming `name` inside `dir_fd`, for calls that take no dir_fd."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def read_xattrs(dir_fd: int, name: bytes) -> dict[bytes, bytes]:
    """Extended attributes of the entry `name` in `dir_fd` (not following symlinks)."""
    return read_xattrs_of(proc_path(dir_fd, name))


def read_xattrs_of(target: int | bytes) -> dict[bytes, bytes]:
    """Extended attributes of an open descriptor or a path (symlinks not followed).

    Unprivileged users get the user.* namespace; root gets all it can read.
    Filesystems without xattr support yield an empty map.
    """
    follow = isinstance(target, int)
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT, errno.EPERM, errno.EACCES):
            return {}
        raise
    attrs: dict[bytes, bytes] = {}
    for attr in names:
        if not IS_ROOT and not attr.startswith("user."):
            continue
        try:
            attrs[os.fsencode(attr)] = os.getxattr(target, attr, follow_symlinks=follow)
        except OSError as err:
            if err.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.EACCES):
                continue
            raise
    return attrs


def list_dir(dir_fd: int) -> list[tuple[bytes, os.stat_result]]:
    """(name, lstat) of each entry, sorted by name."""
    out = []
    with os.scandir(dir_fd) as it:
        for entry in it:
            name = os.fsencode(entry.name)
            try:
                out.append((name, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # removed since listed
    out.sort(key=lambda item: item[0])
    return out


def open_dir(dir_fd: int | None, name: bytes | str) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, dir_fd=dir_fd)


def open_file(dir_fd: int, name: bytes) -> int:
    """Open a regular file for reading without updating its atime where allowed."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    if _O_NOATIME:
        try:
            return os.open(name, flags | _O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            pass  # O_NOATIME needs ownership; plain open may still work
    return os.open(name, flags, dir_fd=dir_fd)


def read_link(dir_fd: int, name: bytes) -> bytes:
    return os.readlink(name, dir_fd=dir_fd)
