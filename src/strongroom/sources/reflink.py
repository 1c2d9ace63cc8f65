"""Reflink copies of a protected tree's changed files, for one cycle.

A tree on a file system that shares extents between files (XFS made with
reflink=1, mkfs.xfs's default; btrfs; bcachefs) and not read from a btrfs
snapshot (sources/btrfs.py) is read by a journal-driven cycle from reflink
copies of exactly the files its change journal names: the FICLONE ioctl makes
a file that shares the original's data blocks (no data copied, no space used
until one of the two is written). Unchanged files come from the parent point;
directories, symlinks and other entries are read from the live tree with the
usual re-check. Why the rules:

- **Consistency.** A frozen file system cannot take a reflink copy (the
  copy's own writes block until the thaw), so, as for btrfs, the cycle holds
  writers with its hooks only (no fsfreeze) and makes the copies inside that
  hold. Each copy is one instant of its file: FICLONE takes both inodes'
  locks, so no write(2) lands half in it (a writer through a shared mmap may
  be caught mid-update, as by any reader). The set of copies is NOT one
  instant across files: the point is application-consistent only when the
  policy's hooks quiesced the writers and all succeeded; otherwise it is
  crash-consistent, its reason saying the copies are per-file instants.
- **Metadata matching the bytes.** A copied file is recorded with its stat
  taken just before the clone (retried when a write lands between the stats),
  not with the live one at read time: should it change after the copy, its
  newer mtime/ctime differ from the point's, so the next cycle (and any full
  comparison) reads it again instead of trusting stale bytes. Its xattrs are
  read from the original at the same time (a copy has none of its own).
- **Bounded.** Writers are held while copying: more than `MAX_COPIES` changed
  files, or copies outlasting the policy's freeze timeout, abandon the copies
  and the cycle reads live with the re-check, the reason recorded (so does a
  journal out of sync: a full comparison has no list of files to copy). A
  file that cannot be copied (another file system mounted below the tree, a
  regular file no more) is read live alone; a hard link makes the cycle a
  full comparison (services/journal.py), read live.
- **Safety.** Paths come from the journal and are opened one component at a
  time from the tree with O_NOFOLLOW (a symlink swapped in is never followed
  out of the tree); only regular files are opened. The copies live in
  `TOP/.strongroom-snapshots/PREFIX.ID/` at the top of the tree's device (a
  copy must be on the same file system; the btrfs snapshots' folder), which
  must be a real directory owned by us; when the tree is that top the folder
  is inside it and the trackers and points leave it out (`ignored_folder`).
- A cycle's copies are deleted after it, whatever happened; what a killed
  cycle of the same source left (same name prefix) is deleted by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from strongroom.sources.btrfs import SNAPSHOT_FOLDER, device_top, ignored_folder, is_ignored
from strongroom.sources.files import read_xattrs_of

FICLONE = 0x40049409  # _IOW(0x94, 9, int): linux/fs.h
MAX_COPIES = 20_000  # changed files a cycle copies at most (writers are held meanwhile)
CLONE_RETRIES = 3  # clones of one file retried while writes land during them
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROBE = b"probe"
_PROBE_BYTES = b"strongroom reflink probe\n" * 200


class HardLinked(OSError):
    """A changed file has other names: the cycle compares in full (services/journal.py)."""


@dataclass(frozen=True)
class CopiedFile:
    """One changed file's copy: its name in the cycle's folder, the original's
    stat and xattrs when it was copied (what the point records)."""

    name: bytes
    stat: os.stat_result
    xattrs: dict[bytes, bytes]


@dataclass
class ReflinkCopies:
    """One cycle's reflink copies of the changed files of `tree`."""

    tree: str  # the tree's real path
    top: str  # the top of its device: the folder goes there
    prefix: str  # this source's copy folders begin with it
    path: str = ""  # this cycle's folder, once prepared
    files: dict[str, CopiedFile] = field(default_factory=dict)  # by path relative to the tree
    not_copied: int = 0  # changed regular files read live instead
    seconds: float = 0.0

    @property
    def folder(self) -> str:
        return os.path.join(self.top, SNAPSHOT_FOLDER)

    def prepare(self) -> str | None:
        """Delete what a killed cycle left, make this cycle's folder and check
        that FICLONE works in it: None when ready, else why copies cannot be
        made here (nothing is left behind)."""
        self.delete()
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            st = os.lstat(self.folder)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                return f"{self.folder} is not a directory of ours"
            path = os.path.join(self.folder, f"{self.prefix}{uuid.uuid4().hex[:12]}")
            os.mkdir(path, 0o700)
            self.path = path
            self._probe()
        except OSError as err:
            self.delete()
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)  # made just now, or empty anyway
            return f"no reflink copies on this file system ({err.strerror or err})"
        return None

    def _probe(self) -> None:
        src = _create(self.path, _PROBE)
        try:
            os.write(src, _PROBE_BYTES)
            dst = _create(self.path, _PROBE + b".copy")
            try:
                fcntl.ioctl(dst, FICLONE, src)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        for name in (_PROBE, _PROBE + b".copy"):
            os.unlink(os.path.join(os.fsencode(self.path), name))

    def copy(self, changed: Iterable[str], deadline: float) -> str | None:
        """Copy every changed regular file (paths relative to the tree, from
        the journal) before `deadline` (time.monotonic()): None when done, else
        why the cycle reads live (every copy is then deleted)."""
        changed = sorted(changed)
        if len(changed) > MAX_COPIES:
            self.delete()
            return f"read live: {len(changed)} changed paths, more than {MAX_COPIES} to copy"
        started = time.monotonic()
        skip = ignored_folder(self.tree)
        tree_fd = os.open(self.tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        out_fd = os.open(self.path, _DIR_FLAGS)
        try:
            for rel in changed:
                if time.monotonic() > deadline:
                    self.delete()
                    return (
                        f"read live: copying {len(changed)} changed paths took more than "
                        f"{deadline - started:.3g} s"
                    )
                if is_ignored(os.fsencode(rel), skip):
                    continue
                try:
                    copied = _copy_one(tree_fd, rel, out_fd, b"%d" % len(self.files))
                except HardLinked:
                    self.delete()
                    return "read live: a changed file is a hard link (full comparison)"
                except OSError as err:  # no room or quota for the copies themselves
                    self.delete()
                    return f"read live: cannot make the copies ({err.strerror or err})"
                if copied is True:
                    self.not_copied += 1
                elif isinstance(copied, CopiedFile):
                    self.files[rel] = copied
        finally:
            os.close(tree_fd)
            os.close(out_fd)
            self.seconds = time.monotonic() - started
        return None

    def recorded(self, tree: str) -> dict[bytes, CopiedFile]:
        """The copies by the path a backup of `tree` records (absolute)."""
        base = os.path.abspath(tree)
        return {os.fsencode(os.path.join(base, rel)): c for rel, c in self.files.items()}

    def delete(self) -> None:
        """Delete this cycle's folder (when made) and any this source left behind."""
        try:
            stale = [n for n in os.listdir(self.folder) if n.startswith(self.prefix)]
        except OSError:
            stale = []
        for name in stale:
            shutil.rmtree(os.path.join(self.folder, name), ignore_errors=True)
        self.path = ""
        self.files = {}


def _create(folder: str, name: bytes) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(os.path.join(os.fsencode(folder), name), flags, 0o600)


def _copy_one(tree_fd: int, rel: str, out_fd: int, name: bytes) -> CopiedFile | bool | None:
    """Reflink one changed path: its copy; None when it is not a regular file
    (gone, a directory, a symlink: the live read handles it); True when it is
    one but could not be copied (read live)."""
    try:
        src = _open_beneath(tree_fd, rel)
    except OSError:
        return None
    if src is None:
        return None
    try:
        st = os.fstat(src)
        if st.st_nlink > 1:
            raise HardLinked(rel)
        dst = os.open(
            name,
            os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=out_fd,
        )
        try:
            for _ in range(CLONE_RETRIES):
                before = os.fstat(src)
                xattrs = read_xattrs_of(src)
                os.ftruncate(dst, 0)
                fcntl.ioctl(dst, FICLONE, src)
                if _same(before, os.fstat(src)):
                    break
        finally:
            os.close(dst)
    except HardLinked:
        raise
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        return True
    finally:
        os.close(src)
    # `before`: should a write have landed during the last clone, the point
    # records the older times and the next comparison reads the file again.
    return CopiedFile(name, before, xattrs)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )


def _open_beneath(tree_fd: int, rel: str) -> int | None:
    """Open `rel` below the tree for reading, never following a symlink: None
    unless it is a regular file. Each directory on the way is opened with
    O_NOFOLLOW from the one before."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    fd = tree_fd
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if fd != tree_fd:
                os.close(fd)
            fd = nxt
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        src = os.open(parts[-1], flags, dir_fd=fd)
        if not stat.S_ISREG(os.fstat(src).st_mode):  # swapped since the lstat
            os.close(src)
            return None
        return src
    finally:
        if fd != tree_fd:
            os.close(fd)


def plan_copies(tree: str, source: str) -> ReflinkCopies | None:
    """The copies a cycle of `tree` (the source `source`) makes, or None when
    the tree is gone. Nothing is made yet (`prepare`)."""
    try:
        top = device_top(tree)
    except OSError:
        return None
    tag = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return ReflinkCopies(os.path.realpath(tree), top, f"r{tag}.")
