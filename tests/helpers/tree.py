"""Building source trees for backups: small ones for CLI tests, and one tree with
every kind of entry and metadata a file backup must preserve.

Times: every entry gets an mtime in the past with nanoseconds and an atime one
hour in the future (also with nanoseconds). A future atime is later than the
entry's mtime and ctime, so with `relatime` no later read or listing (by the
backup, the restore, rsync or a comparison) updates it, and atimes can be
compared exactly after a restore.
"""

from __future__ import annotations

import os
import random
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024
LONG_NAME_LEN = 200
LONG_DEPTH = 21  # 21 * 201 bytes > 4096: the path is longer than PATH_MAX
DEEP_DEPTH = 300
SPARSE_SIZE = 64 * MiB
SPARSE_ISLANDS = (0, 5 * MiB + 123, 30 * MiB, 40 * MiB + 7)
ISLAND_SIZE = 64 * 1024
OWNER_UID, OWNER_GID = 1234, 5678


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def compressible_bytes(n: int, seed: int = 0) -> bytes:
    """Text-like data that zstd shrinks a lot, but not all-repeating."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"backup", b"chunk", b"pack", b"index"]
    out = bytearray()
    line = 0
    while len(out) < n:
        out += b"%08d " % line + b" ".join(rng.choice(words) for _ in range(8)) + b"\n"
        line += 1
    return bytes(out[:n])


def write_file(path: Path, data: bytes, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def make_small_tree(root: Path, seed: int = 0) -> dict[str, bytes]:
    """A few files and directories; returns {relative path: content}."""
    files = {
        "a.txt": b"hello world\n",
        "empty": b"",
        "sub/b.bin": random_bytes(300_000, seed),
        "sub/deeper/c.txt": compressible_bytes(50_000, seed),
        "sub/deeper/d.bin": random_bytes(5_000, seed + 1),
        "other/e.txt": b"e" * 1000,
    }
    for rel, data in files.items():
        write_file(root / rel, data)
    (root / "emptydir").mkdir(parents=True, exist_ok=True)
    return files


@dataclass
class FullTree:
    """What `make_full_tree` built, for the checks that need to know."""

    root: Path
    sparse: Path
    long_dir: bytes  # relative path (bytes) of the directory holding the > 4096-byte path
    long_leaf: bytes  # relative path of the file at the bottom of it
    deep_leaf: Path
    hardlink_groups: list[list[str]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)


def _set_times_bottom_up(root: Path, base_mtime_ns: int, future_atime_ns: int) -> None:
    """Distinct nanosecond times on every entry, directories after their contents."""
    counter = 0

    def visit(dir_fd: int) -> None:
        nonlocal counter
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    visit(sub)
                finally:
                    os.close(sub)
            counter += 1
            os.utime(
                name,
                ns=(future_atime_ns + counter * 1_111, base_mtime_ns + counter * 1_000_003),
                dir_fd=dir_fd,
                follow_symlinks=False,
            )

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        visit(fd)
    finally:
        os.close(fd)
    os.utime(root, ns=(future_atime_ns, base_mtime_ns), follow_symlinks=False)


def _make_long_path(parent: Path) -> tuple[bytes, bytes]:
    """Nested 200-byte names, created with dir_fd-relative calls (the full path is
    longer than PATH_MAX, so no path-based call could reach the bottom)."""
    parent.mkdir()
    rel_parts: list[bytes] = []
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(LONG_DEPTH):
            name = (b"%03d" % level) + b"L" * (LONG_NAME_LEN - 3)
            os.mkdir(name, 0o755, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
            rel_parts.append(name)
        leaf = b"leaf.txt"
        wfd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, dir_fd=fd)
        try:
            os.write(wfd, b"at the bottom of a very long path\n" * 100)
            os.setxattr(wfd, b"user.where", b"deep down")
            os.fchown(wfd, OWNER_UID, OWNER_GID)
        finally:
            os.close(wfd)
        os.symlink(b"leaf.txt", b"leaf-link", dir_fd=fd)
        os.mkfifo(b"leaf-fifo", 0o600, dir_fd=fd)
    finally:
        os.close(fd)
    long_dir = parent.name.encode()
    return long_dir, b"/".join([long_dir, *rel_parts, b"leaf.txt"])


def make_full_tree(root: Path) -> FullTree:
    """Every kind of entry and metadata. Needs root (owners, devices, trusted.*)."""
    root.mkdir(parents=True)
    files: dict[str, bytes] = {}

    def add(rel: str, data: bytes, mode: int | None = None) -> Path:
        files[rel] = data
        return write_file(root / rel, data, mode)

    # Regular files of many sizes: empty, tiny, around the small-file limit,
    # multi-chunk random and compressible, and all-zero data.
    add("files/empty", b"")
    add("files/tiny.txt", b"x")
    add("files/small.txt", b"small file\n" * 10)
    add("files/min_chunk.bin", random_bytes(256 * 1024, 1))
    add("files/min_chunk_plus_one.bin", random_bytes(256 * 1024 + 1, 2))
    add("files/random_9m.bin", random_bytes(9 * MiB + 17, 3))
    add("files/text_6m.txt", compressible_bytes(6 * MiB + 5, 4))
    add("files/zeros_1m.bin", bytes(MiB))

    # A sparse file: 64 MiB with a few data islands.
    sparse = root / "sparse" / "disk.img"
    sparse.parent.mkdir()
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_SIZE)
        for i, offset in enumerate(SPARSE_ISLANDS):
            f.seek(offset)
            f.write(random_bytes(ISLAND_SIZE, 100 + i))

    # Directories: empty ones, nested empty ones.
    (root / "dirs" / "empty").mkdir(parents=True)
    (root / "dirs" / "nested" / "empty" / "deeper").mkdir(parents=True)

    # Symlinks: relative, absolute, dangling, to a directory, and a long target.
    links = root / "links"
    links.mkdir()
    os.symlink("../files/small.txt", links / "relative")
    os.symlink(str(root / "files" / "tiny.txt"), links / "absolute")
    os.symlink("does/not/exist", links / "dangling")
    os.symlink("../dirs", links / "to_dir")
    os.symlink("t" * 1000, links / "long_target")

    # Hard links: a group of 2 (small) and a group of 3 (multi-chunk), across directories.
    hard = root / "hard"
    hard.mkdir()
    add("hard/two_a", b"two links\n" * 50)
    os.link(hard / "two_a", hard / "two_b")
    files["hard/two_b"] = files["hard/two_a"]
    add("hard/three_a", random_bytes(5 * MiB, 7))
    (hard / "sub").mkdir()
    os.link(hard / "three_a", hard / "three_b")
    os.link(hard / "three_a", hard / "sub" / "three_c")
    files["hard/three_b"] = files["hard/sub/three_c"] = files["hard/three_a"]
    groups = [["hard/two_a", "hard/two_b"], ["hard/three_a", "hard/three_b", "hard/sub/three_c"]]

    # Permissions: setuid, setgid, sticky, nothing at all; owners.
    perms = root / "perms"
    perms.mkdir()
    add("perms/setuid", b"#!/bin/sh\n", 0o4755)
    add("perms/setgid", b"#!/bin/sh\n", 0o2750)
    add("perms/setuid_setgid_sticky", b"all three\n", 0o7777)
    add("perms/none", b"no permissions\n", 0o000)
    (perms / "sticky_dir").mkdir()
    os.chmod(perms / "sticky_dir", 0o1777)
    (perms / "setgid_dir").mkdir()
    os.chmod(perms / "setgid_dir", 0o2775)
    add("perms/closed_dir/inside.txt", b"inside a 000 directory\n")
    os.chmod(perms / "closed_dir", 0o000)
    add("perms/owned", b"owned by 1234:5678\n", 0o640)
    os.chown(perms / "owned", OWNER_UID, OWNER_GID)
    (perms / "owned_dir").mkdir()
    os.chown(perms / "owned_dir", OWNER_UID, OWNER_GID)
    os.symlink("owned", perms / "owned_link")
    os.lchown(perms / "owned_link", OWNER_UID, OWNER_GID)
    # chown clears setuid: set the mode after the owner.
    add("perms/owned_setuid", b"setuid, other owner\n")
    os.chown(perms / "owned_setuid", OWNER_UID, OWNER_GID)
    os.chmod(perms / "owned_setuid", 0o4750)

    # Extended attributes (user.* and trusted.*) and POSIX ACLs.
    xattr = root / "xattr"
    xattr.mkdir()
    f = add("xattr/file", b"has xattrs\n")
    os.setxattr(f, "user.comment", b"a comment")
    os.setxattr(f, "user.binary", bytes(range(256)))
    os.setxattr(f, "user.empty", b"")
    os.setxattr(f, "trusted.secret", b"only root sees this")
    d = xattr / "dir"
    d.mkdir()
    os.setxattr(d, "user.dir_attr", b"on a directory")
    os.setxattr(d, "trusted.dir", b"trusted on a directory")
    big = add("xattr/big_value", random_bytes(3 * MiB, 8))
    os.setxattr(big, "user.big", random_bytes(3000, 9))
    acl = add("xattr/acl_file", b"acl\n", 0o640)
    subprocess.run(["setfacl", "-m", "u:1234:rwx,g:5678:r", str(acl)], check=True)
    acl_dir = xattr / "acl_dir"
    acl_dir.mkdir()
    subprocess.run(["setfacl", "-m", "u:1234:rx", str(acl_dir)], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx,g:5678:rx", str(acl_dir)], check=True)
    fifo_x = xattr / "fifo_with_xattr"
    os.mkfifo(fifo_x)
    os.setxattr(fifo_x, "trusted.on_fifo", b"fifo")

    # Special files: FIFO, character and block devices, a socket.
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo", 0o640)
    os.mknod(special / "char", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(special / "block", stat.S_IFBLK | 0o660, os.makedev(7, 200))
    os.chown(special / "block", OWNER_UID, OWNER_GID)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(special / "socket"))
    finally:
        sock.close()

    # Names that are not UTF-8, and other awkward names.
    names = os.fsencode(root / "names")
    os.mkdir(names)
    odd = {
        b"\xff\xfe": b"not utf-8\n",
        b"caf\xe9": b"latin-1 name\n",
        b"new\nline": b"newline in the name\n",
        b" leading and trailing ": b"spaces\n",
        "ünïcødé ✓".encode(): b"unicode\n",
        b"-dash": b"dash\n",
    }
    for name, data in odd.items():
        with open(os.path.join(names, name), "wb") as fh:
            fh.write(data)
    os.mkdir(os.path.join(names, b"dir\x80\xfe"))
    with open(os.path.join(names, b"dir\x80\xfe", b"inner\xff"), "wb") as fh:
        fh.write(b"inside a non-utf-8 directory\n")
    os.symlink(b"\xff\xfe", os.path.join(names, b"link-to-\xff"))

    # A path longer than PATH_MAX (4096 bytes).
    long_dir, long_leaf = _make_long_path(root / "longpath")

    # A deep tree (depth 300).
    deep = root / "deep"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEEP_DEPTH):
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        wfd = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, b"depth 300\n")
        os.close(wfd)
    finally:
        os.close(fd)
    deep_leaf = deep.joinpath(*(["d"] * DEEP_DEPTH), "bottom.txt")

    now_ns = time.time_ns()
    _set_times_bottom_up(
        root,
        base_mtime_ns=1_500_000_000_123_456_789,
        future_atime_ns=now_ns + 3600 * 10**9 + 987_654_321,
    )
    return FullTree(
        root=root,
        sparse=sparse,
        long_dir=long_dir,
        long_leaf=long_leaf,
        deep_leaf=deep_leaf,
        hardlink_groups=groups,
        files=files,
    )
