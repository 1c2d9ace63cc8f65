"""Read-only btrfs snapshots of a protected tree, for one cycle.

A tree on btrfs (a subvolume, or a directory inside one) is read by a cycle
from a read-only snapshot of its subvolume taken at the cycle's instant
(`btrfs subvolume snapshot -r`), so the point holds the tree as it was at that
instant, whatever writers do while it is read. Why the rules:

- The snapshot must be of the *subvolume* (btrfs snapshots whole subvolumes),
  found by walking up from the tree while the device number stays the same
  (each subvolume has its own); its root directory is inode 256. A subvolume
  root not reachable from here (a bind mount of a subdirectory) means no
  snapshot: the caller reads the live tree.
- Snapshots live in `SUBVOL/.strongroom-snapshots/` (a snapshot must be on the
  same file system; the subvolume is the one place sure to be). When the tree
  *is* the subvolume root this folder is inside the tree: the trackers ignore
  it (`ignored_folder`) and the backup leaves it out, so it never reaches the
  journal or a point.
- A frozen btrfs cannot take a snapshot (the ioctl waits for the thaw), and it
  needs none: the snapshot is atomic by itself. The cycle quiesces with its
  hooks and no fsfreeze.
- A snapshot is deleted after its cycle, whatever happened; one left behind by
  a killed cycle (same source: same name prefix) is deleted by the next one.
- Subvolumes nested below the tree are not in the snapshot (btrfs snapshots
  are not recursive): such a tree is read live (`nested_subvolumes`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import subprocess
import uuid
from dataclasses import dataclass

from strongroom.config import child_environment
from strongroom.errors import SourceError

SNAPSHOT_FOLDER = ".strongroom-snapshots"
BTRFS_SUPER_MAGIC = 0x9123683E
SUBVOLUME_ROOT_INODE = 256  # BTRFS_FIRST_FREE_OBJECTID: every subvolume's root directory
EMPTY_SUBVOLUME_INODE = 2  # what a nested subvolume looks like inside a snapshot
BTRFS_TIMEOUT = 120.0  # seconds a `btrfs` command may take

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def is_btrfs(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is on btrfs (statfs's f_type, the first field of struct statfs)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return False
    f_type = int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little", signed=True)
    return f_type & 0xFFFFFFFF == BTRFS_SUPER_MAGIC


def subvolume_root(path: str | os.PathLike[str]) -> str | None:
    """The root of the btrfs subvolume holding `path` (resolved), or None when it
    is not on btrfs or the subvolume's root is not reachable from here."""
    if not is_btrfs(path):
        return None
    here = device_top(path)
    return here if os.stat(here).st_ino == SUBVOLUME_ROOT_INODE else None


def device_top(path: str | os.PathLike[str]) -> str:
    """The highest directory above `path` (resolved) on the same device number:
    a file system's mount point, a btrfs subvolume's root (each has its own)."""
    here = os.path.realpath(path)
    dev = os.stat(here).st_dev
    while here != "/":
        parent = os.path.dirname(here)
        if os.stat(parent).st_dev != dev:
            break
        here = parent
    return here


def ignored_folder(tree: str | os.PathLike[str]) -> bytes | None:
    """The cycles' folder (btrfs snapshots here, reflink copies in
    sources/reflink.py: both at the top of the tree's device) relative to
    `tree` when it lies inside the tree (the tree is that top: a subvolume's
    root, a mount point), else None. The trackers drop every change at or
    below it and the cycles leave it out of their points."""
    try:
        top = device_top(tree)
    except OSError:
        return None
    if top != os.path.realpath(tree):
        return None
    return os.fsencode(SNAPSHOT_FOLDER)


def is_ignored(rel: bytes, folder: bytes | None) -> bool:
    """Whether a tracker's relative path is the snapshot folder or below it."""
    return folder is not None and (rel == folder or rel.startswith(folder + b"/"))


def nested_subvolumes(tree: str) -> bool:
    """Whether a directory below `tree` is another subvolume's root (not in a
    snapshot of the tree's subvolume). Checks the subvolumes btrfs lists."""
    root = subvolume_root(tree)
    if root is None:
        return False
    tree = os.path.realpath(tree)
    out = _btrfs("subvolume", "list", "-o", root)
    below = tree.rstrip("/") + "/"
    ours = os.path.join(root, SNAPSHOT_FOLDER) + "/"
    for line in out.splitlines():
        # "ID 258 gen 9 top level 256 path sub/inner": the path is relative to
        # the file system's top; compare by name from the subvolume root down.
        _, _, rel = line.partition(" path ")
        for candidate in _suffixes(rel.strip()):
            full = os.path.join(root, candidate)
            if full.startswith(below) and not full.startswith(ours) and _is_subvolume(full):
                return True
    return False


def _suffixes(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p]
    return ["/".join(parts[i:]) for i in range(len(parts))]


def _is_subvolume(path: str) -> bool:
    try:
        return os.lstat(path).st_ino == SUBVOLUME_ROOT_INODE
    except OSError:
        return False


def _btrfs(*args: str) -> str:
    try:
        done = subprocess.run(
            ["btrfs", *args],
            capture_output=True,
            text=True,
            timeout=BTRFS_TIMEOUT,
            check=False,
            env=child_environment(),
        )
    except FileNotFoundError:
        raise SourceError("btrfs: the btrfs command is not installed (btrfs-progs)") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"btrfs {args[0]} {args[1]}: no answer in {BTRFS_TIMEOUT:g} s") from None
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split()) or f"exit status {done.returncode}"
        raise SourceError(f"btrfs {args[0]} {args[1]}: {why}")
    return done.stdout


@dataclass
class TreeSnapshot:
    """One cycle's read-only snapshot of the subvolume holding `tree`."""

    tree: str  # the tree's real path (what the point records)
    subvolume: str  # its subvolume's root
    prefix: str  # this source's snapshot names begin with it
    path: str = ""  # the snapshot, once taken

    @property
    def folder(self) -> str:
        return os.path.join(self.subvolume, SNAPSHOT_FOLDER)

    @property
    def read_root(self) -> str:
        """Where the tree is inside the snapshot (the same relative paths below)."""
        if not self.path:
            raise SourceError("btrfs: the snapshot was not taken")
        rel = os.path.relpath(self.tree, self.subvolume)
        return self.path if rel == "." else os.path.join(self.path, rel)

    def take(self) -> None:
        """Snapshot the subvolume now (read-only, atomic)."""
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        path = os.path.join(self.folder, f"{self.prefix}{uuid.uuid4().hex[:12]}")
        _btrfs("subvolume", "snapshot", "-r", self.subvolume, path)
        self.path = path

    def delete(self) -> None:
        """Delete the snapshot (when taken) and any this source left behind."""
        stale = []
        try:
            stale = [n for n in os.listdir(self.folder) if n.startswith(self.prefix)]
        except FileNotFoundError:
            pass
        for name in stale:
            _btrfs("subvolume", "delete", os.path.join(self.folder, name))
        self.path = ""


def plan_snapshot(tree: str, source: str) -> TreeSnapshot | None:
    """The snapshot a cycle of `tree` (the source `source`) takes, or None when
    the tree is not on a btrfs subvolume reachable from here. Not taken yet."""
    try:
        root = subvolume_root(tree)
    except OSError:
        return None
    if root is None:
        return None
    tag = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return TreeSnapshot(os.path.realpath(tree), root, f"{tag}.")
