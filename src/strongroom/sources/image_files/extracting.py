"""Restoring a file, symlink or directory tree of an image's file system to local disk."""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
from collections.abc import Iterator

from strongroom.sources.image_files.entry import ImageEntry, ImageFileSystem

_COPY_CHUNK = 1 << 20
_HOLE_CHUNK = 64 << 10


def extract(fs: ImageFileSystem, path: str, target_dir: str) -> int:
    """Restore a file, symlink or directory tree of `fs` into `target_dir`; returns file bytes.

    `/a/b` lands at `target_dir/b`, "/" fills `target_dir` itself. Contents are
    streamed, runs of zeros become holes, and modes and mtimes (and owners when
    run as root) are set, on directories after their contents. Existing files
    are replaced; a symlink in the way is removed, never followed. Other types
    (devices, fifos) are skipped and noted in `fs.warnings`.

    Names were checked when listed (one component each, no duplicates), so every
    destination is below `target_dir`; metadata never follows a symlink.
    """
    top = fs.stat(path)
    os.makedirs(target_dir, exist_ok=True)
    root = target_dir if top.path == "/" else os.path.join(target_dir, posixpath.basename(top.path))
    written, dirs = 0, []
    entries = fs.walk(top.path) if top.type == "dir" else iter(())
    for entry in _with_first(top, entries):
        relative = entry.path[len(top.path) :].lstrip("/")
        dest = os.path.join(root, *relative.split("/")) if relative else root
        if entry.type == "dir":
            if dest != target_dir:
                _make_dir(dest)
                dirs.append((dest, entry))
        elif entry.type == "file":
            written += _write_file(fs, entry, dest)
        elif entry.type == "symlink" and entry.target:
            _clear(dest)
            os.symlink(entry.target, dest)
            _set_meta(dest, entry)
        else:
            fs.warnings.append(f"not restored: {entry.path} ({entry.type})")
    for dest, entry in reversed(dirs):
        _set_meta(dest, entry)
    return written


def _with_first(first: ImageEntry, rest: Iterator[ImageEntry]) -> Iterator[ImageEntry]:
    yield first
    yield from rest


def _clear(dest: str) -> None:
    """Remove what is at `dest` unless it is a real directory (a symlink is never followed)."""
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a directory is in the way", dest)
    os.unlink(dest)


def _make_dir(dest: str) -> None:
    try:
        if stat.S_ISDIR(os.lstat(dest).st_mode):
            return
        os.unlink(dest)
    except FileNotFoundError:
        pass
    os.mkdir(dest, 0o700)


def _write_file(fs: ImageFileSystem, entry: ImageEntry, dest: str) -> int:
    _clear(dest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with fs.open(entry.path) as source, open(os.open(dest, flags, 0o600), "wb") as out:
        try:
            while chunk := source.read(_COPY_CHUNK):
                view = memoryview(chunk)
                for start in range(0, len(view), _HOLE_CHUNK):
                    piece = view[start : start + _HOLE_CHUNK]
                    if piece.tobytes().count(0) == len(piece):
                        out.seek(len(piece), io.SEEK_CUR)
                    else:
                        out.write(piece)
            out.truncate(entry.size)
        except BaseException:
            os.unlink(dest)  # no half-restored file that looks whole
            raise
    _set_meta(dest, entry)
    return entry.size


def _set_meta(dest: str, entry: ImageEntry) -> None:
    """Owner, then mode (setuid bits survive), then times, through an O_PATH
    descriptor of `dest` itself: a symlink swapped in is never followed
    (/proc/self/fd/N of a symlink names the symlink, not its target)."""
    handle = os.open(dest, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        proc = f"/proc/self/fd/{handle}"
        if entry.type != "symlink" and stat.S_ISLNK(os.fstat(handle).st_mode):
            raise OSError(errno.ELOOP, "replaced by a symlink while restored", dest)
        if os.geteuid() == 0:
            os.chown(proc, entry.uid, entry.gid)
        if entry.type != "symlink":
            os.chmod(proc, entry.mode)
        ns = round(entry.mtime * 1e9)
        os.utime(proc, ns=(ns, ns))
    finally:
        os.close(handle)
