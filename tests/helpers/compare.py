"""Comparing a source tree with its restored copy.

Two independent comparisons:

- `rsync_differences`: `rsync -aHAXn --numeric-ids --checksum --itemize-changes
  --delete`, which must print nothing (contents, modes, owners, mtimes, hard
  links, ACLs, xattrs, devices, symlinks);
- `walk_differences`: a Python walk over directory descriptors, so it also
  covers paths longer than PATH_MAX and compares what rsync does not (atime with
  nanoseconds, exact mtime nanoseconds, inode sharing).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NOATIME = getattr(os, "O_NOATIME", 0)


def atime_is_stable(path: Path | str) -> bool:
    """True if reads on this filesystem leave a future atime alone (relatime or
    noatime); with strictatime every read moves it and atimes cannot be compared."""
    flags = os.statvfs(path).f_flag
    return bool(flags & (getattr(os, "ST_RELATIME", 4096) | os.ST_NOATIME))


def rsync_differences(
    src: Path | str, dst: Path | str, excludes: tuple[str, ...] = ()
) -> list[str]:
    """Itemized differences from `src` to `dst` (an empty list means identical)."""
    cmd = [
        "rsync",
        "-aHAXn",
        "--numeric-ids",
        "--checksum",
        "--itemize-changes",
        "--delete",
        *(f"--exclude={pattern}" for pattern in excludes),
        f"{src}/",
        f"{dst}/",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    assert proc.returncode == 0, f"rsync failed ({proc.returncode}): {proc.stderr!r}"
    return [line for line in proc.stdout.decode("utf-8", "backslashreplace").splitlines() if line]


def _xattrs(dir_fd: int, name: bytes) -> dict[str, bytes]:
    path = b"/proc/self/fd/%d/%s" % (dir_fd, name)
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)}


def _digest(dir_fd: int, name: bytes) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _O_NOATIME, dir_fd=dir_fd)
    h = hashlib.sha256()
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def describe(dir_fd: int, name: bytes, st: os.stat_result) -> dict[str, object]:
    """Everything a restore must reproduce about one entry (but its inode)."""
    info: dict[str, object] = {
        "type": stat.S_IFMT(st.st_mode),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "atime_ns": st.st_atime_ns,
        "xattrs": _xattrs(dir_fd, name),
    }
    if stat.S_ISREG(st.st_mode):
        info["size"] = st.st_size
        info["nlink"] = st.st_nlink
        info["sha256"] = _digest(dir_fd, name)
    elif stat.S_ISLNK(st.st_mode):
        info["target"] = os.readlink(name, dir_fd=dir_fd)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info["rdev"] = st.st_rdev
    return info


def walk(root: Path | str | bytes) -> Iterator[tuple[bytes, os.stat_result, dict[str, object]]]:
    """(relative path, lstat, description) of every entry below `root`, depth first,
    sorted by name; relies on directory descriptors only (no PATH_MAX limit)."""
    top = os.open(os.fsencode(root), _DIR_FLAGS)
    stack: list[tuple[int, bytes, Iterator[bytes]]] = []

    def push(fd: int, rel: bytes) -> None:
        with os.scandir(fd) as it:
            names = sorted(os.fsencode(e.name) for e in it)
        stack.append((fd, rel, iter(names)))

    push(top, b"")
    try:
        while stack:
            fd, rel, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            child = rel + b"/" + name if rel else name
            yield child, st, describe(fd, name, st)
            if stat.S_ISDIR(st.st_mode):
                push(os.open(name, _DIR_FLAGS, dir_fd=fd), child)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def walk_differences(
    src: Path | str, dst: Path | str, *, check_atime: bool = True, check_root: bool = True
) -> list[str]:
    """Human-readable differences between two trees; empty if they are equal."""
    problems: list[str] = []
    src_entries = {rel: (st, info) for rel, st, info in walk(src)}
    dst_entries = {rel: (st, info) for rel, st, info in walk(dst)}
    for rel in sorted(src_entries.keys() - dst_entries.keys()):
        problems.append(f"missing in restore: {rel!r}")
    for rel in sorted(dst_entries.keys() - src_entries.keys()):
        problems.append(f"extra in restore: {rel!r}")
    inode_map: dict[int, int] = {}
    for rel in sorted(src_entries.keys() & dst_entries.keys()):
        (s_st, s_info), (d_st, d_info) = src_entries[rel], dst_entries[rel]
        for key in sorted(s_info.keys() | d_info.keys()):
            if key == "atime_ns" and (not check_atime or stat.S_ISLNK(s_st.st_mode)):
                continue
            if s_info.get(key) != d_info.get(key):
                problems.append(f"{rel!r}: {key}: {s_info.get(key)!r} != {d_info.get(key)!r}")
        if stat.S_ISREG(s_st.st_mode):
            # Files that share an inode in the source share one in the restore, and
            # files that do not, do not.
            mapped = inode_map.setdefault(s_st.st_ino, d_st.st_ino)
            if mapped != d_st.st_ino:
                problems.append(f"{rel!r}: hard link group split in the restore")
    dst_inodes = list(inode_map.values())
    if len(set(dst_inodes)) != len(dst_inodes):
        problems.append("restore joined files into one inode that were separate")
    if check_root:
        s_root, d_root = os.lstat(src), os.lstat(dst)
        for attr in ("st_mode", "st_uid", "st_gid", "st_mtime_ns"):
            if getattr(s_root, attr) != getattr(d_root, attr):
                problems.append(f"top directory: {attr} differs")
    return problems
