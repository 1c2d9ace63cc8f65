"""What the golden repositories of tests/data hold, and how a restore is described.

Shared by the generator (`tests/data/make_golden.py`, run by hand) and the tests
(`tests/format/test_golden.py`): the fixed password and paths, and `listing()`,
the JSON description of a restored tree that the expected-output manifest stores.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data"
PASSWORD = "strongroom golden repository"
# The key file records its own argon2 cost; a cheap one keeps the tests fast.
KDF = "1,8192,1"
# Everything the generator backs up lives below this fixed folder, so the points
# record the same absolute paths on every machine that regenerates them.
WORK = "/tmp/strongroom-golden"
VM_NAME = "golden"


def runs(n: int, seed: bytes) -> bytes:
    """Lines of 8 random hex digits, each followed by a run of 100..355 of one
    letter: content-defined cuts fall where the data says (6 MiB give 3 to 5
    chunks, depending on the repository's key), and zstd squeezes the runs, so
    the file stores as about 230 KiB."""
    stream = hashlib.shake_256(seed).digest(n // 16 + 64)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += stream[i : i + 4].hex().encode() + b"\n"
        out += bytes([97 + stream[i] % 26]) * (100 + stream[i + 1]) + b"\n"
        i += 4
    return bytes(out[:n])


def golden_text() -> bytes:
    """The multi-chunk file of the golden files point (`src/text.txt`)."""
    return runs(6 * 1024 * 1024 + 12345, b"golden text")


_TYPES = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFIFO: "p",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
    stat.S_IFSOCK: "s",
}
_O_NOATIME = getattr(os, "O_NOATIME", 0)


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _digest(dir_fd: int, name: bytes) -> str:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | _O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        fd = os.open(name, flags, dir_fd=dir_fd)
    h = hashlib.sha256()
    try:
        while block := os.read(fd, 1 << 20):
            h.update(block)
    finally:
        os.close(fd)
    return h.hexdigest()


def _xattrs(dir_fd: int, name: bytes) -> dict[str, str]:
    path = b"/proc/self/fd/%d/%s" % (dir_fd, name)
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in sorted(names)}


def _describe(dir_fd: int, name: bytes, st: os.stat_result) -> dict[str, Any]:
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    entry: dict[str, Any] = {
        "type": kind,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "atime_ns": st.st_atime_ns,
        "xattrs": _xattrs(dir_fd, name),
    }
    if kind == "f":
        entry["size"] = st.st_size
        entry["sha256"] = _digest(dir_fd, name)
    elif kind == "l":
        entry["target"] = os.fsdecode(os.readlink(name, dir_fd=dir_fd))
    elif kind in "cb":
        entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    return entry


def listing(root: Path | str) -> list[dict[str, Any]]:
    """Every entry below `root` (not `root` itself), depth first, names sorted bytewise.

    Each entry is taken with lstat *before* anything reads it, so atimes are those
    the tree had. Paths are relative, decoded with surrogateescape (JSON keeps a
    non-UTF-8 byte as a lone surrogate `\\udcNN`); xattr values are hex; files
    that share an inode carry `link`, the first path of their group."""
    out: list[dict[str, Any]] = []
    inodes: dict[tuple[int, int], str] = {}
    top = os.open(os.fsencode(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def visit(fd: int, rel: bytes) -> None:
        with os.scandir(fd) as it:
            names = sorted(os.fsencode(e.name) for e in it)
        for name in names:
            path = rel + b"/" + name if rel else name
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            entry = {"path": os.fsdecode(path), **_describe(fd, name, st)}
            if entry["type"] == "f" and st.st_nlink > 1:
                entry["link"] = inodes.setdefault((st.st_dev, st.st_ino), entry["path"])
            out.append(entry)
            if entry["type"] == "d":
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    visit(child, path)
                finally:
                    os.close(child)

    try:
        visit(top, b"")
    finally:
        os.close(top)
    return out
