"""`restore --include` on an image point: each path lands below the target with
its full path, as a files point's does (`/docs/deeper` at TARGET/docs/deeper).

The directories on the way are made (or reused) relative to descriptors opened
with O_NOFOLLOW, so a symlink placed in the target is never followed out of
it, and get their owner, mode and mtime from the image once everything below
them is written. `extract` then writes below the innermost one through
/proc/self/fd/N, the very directory opened, whatever its path does meanwhile.
"""

from __future__ import annotations

import os
import stat

from strongroom.services.image_files import extract
from strongroom.sources.image_files import ImageFileSystem

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def extract_with_full_path(fs: ImageFileSystem, path: str, target: str) -> int:
    """Restore `path` (absolute, normalized: services.restore.point_path) of `fs`
    to TARGET/path; returns the file bytes written."""
    parts = [p for p in path.split("/") if p]
    os.makedirs(target, exist_ok=True)
    fds = [os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for part in parts[:-1]:
            fds.append(_enter(fds[-1], part))
        written = extract(fs, path, f"/proc/self/fd/{fds[-1]}")
        for depth in range(len(parts) - 1, 0, -1):  # innermost first: its parent's mtime last
            entry = fs.stat("/" + "/".join(parts[:depth]))
            fd = fds[depth]
            if os.geteuid() == 0:
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, stat.S_IMODE(entry.mode))
            ns = round(entry.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
        return written
    finally:
        for fd in fds:
            os.close(fd)


def _enter(dir_fd: int, name: str) -> int:
    """The directory `name` below `dir_fd`, made if missing; anything else there
    (a symlink too: removed, never followed) is replaced by a directory."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=dir_fd)
            os.mkdir(name, 0o700, dir_fd=dir_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
