"""File restore: recreate a point's tree with contents and metadata.

Chunks are fetched, authenticated and decompressed on a thread pool and
written with pwrite at their known offsets; all-zero chunks are skipped, so
sparse files stay sparse. Metadata is applied after content (a directory's
after all its entries, or their creation would bump its mtime). A damaged
chunk marks its files as damaged; everything else is restored and the caller
gets the list, to exit non-zero.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from dataclasses import dataclass, field

from strongroom.errors import Interrupted, PathNotFound, StrongroomError
from strongroom.model.tree import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SYMLINK,
    Node,
    decode_tree,
)
from strongroom.pipeline.ordered import OrderedWork
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.sources.block_targets import pwrite_all
from strongroom.types import Progress, ProgressCallback, no_progress

IS_ROOT = os.geteuid() == 0
_PROGRESS_INTERVAL = 0.2


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    other_entries: int = 0
    bytes_written: int = 0
    damaged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "other_entries": self.other_entries,
            "bytes_written": self.bytes_written,
            "damaged": self.damaged,
            "warnings": self.warnings,
        }


_PATH_MAX_SAFE = 3072  # relative link sources longer than this use a descriptor
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_zero(data: bytes) -> bool:
    """All-zero chunk? Cheap for the usual case: real data rarely ends in zeros at both ends."""
    return bool(data) and data[0] == 0 and data[-1] == 0 and not data.strip(b"\0")


class _Selection:
    """Which paths to restore: all, or those under/leading to `--include` paths."""

    def __init__(self, includes: list[str]) -> None:
        self.includes = [os.fsencode(i.rstrip("/") or "/") for i in includes]

    def covers(self, path: bytes) -> bool:
        """The entry and everything below it are restored."""
        if not self.includes:
            return True
        return any(
            path == inc or path.startswith(inc + b"/") or inc == b"/" for inc in self.includes
        )

    def leads_to(self, path: bytes) -> bool:
        """The entry is a directory on the way to an included path."""
        return any(inc.startswith(path + b"/") for inc in self.includes)


class FileRestore:
    def __init__(
        self,
        repo: Repository,
        tree_id: bytes,
        target: str,
        includes: list[str] | None = None,
        progress: ProgressCallback = no_progress,
        workers: int = 4,
        cancel: threading.Event | None = None,
    ) -> None:
        self.repo = repo
        self.tree_id = tree_id
        self.target = target
        self.selection = _Selection(includes or [])
        self.report = progress
        self.cancel = cancel or threading.Event()
        self.summary = RestoreSummary()
        self.progress = Progress(job="restore")
        self._work = OrderedWork(workers, depth=4 * workers + 4)
        # First restored name of each hard-linked inode: its path relative to the
        # target, or (beyond PATH_MAX) an O_PATH descriptor of the file itself.
        self._links: dict[tuple[int, int], bytes | int] = {}
        self._root_fd = -1
        self._last_report = 0.0
        self._matched_include: set[bytes] = set()
        # Restoring into an empty target: nothing can be in the way, skip the checks.
        self._fresh = False

    def run(self) -> RestoreSummary:
        os.makedirs(self.target, exist_ok=True)
        self._fresh = not os.listdir(self.target)
        self._root_fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with self._work:
                self._restore_tree(self.tree_id, self._root_fd, b"", b"", full=False)
                self._work.finish()
        finally:
            os.close(self._root_fd)
            for first in self._links.values():
                if isinstance(first, int) and first >= 0:
                    os.close(first)
        missing = [
            os.fsdecode(i) for i in self.selection.includes if i not in self._matched_include
        ]
        if missing and not self.summary.files and not self.summary.dirs:
            raise PathNotFound(f"not in the point: {', '.join(missing)}")
        self._emit(force=True)
        return self.summary

    # --- traversal -----------------------------------------------------------

    def _restore_tree(
        self, tree_id: bytes, dir_fd: int, path: bytes, rel: bytes, full: bool
    ) -> None:
        nodes = decode_tree(self.repo.load_chunk(tree_id, BlobType.TREE))
        for node in nodes:
            if self.cancel.is_set():
                raise Interrupted("interrupted")
            child_path = path + b"/" + node.name
            child_rel = rel + b"/" + node.name if rel else node.name
            covered = full or self.selection.covers(child_path)
            if covered and not full:
                self._matched_include.add(child_path)
            if not covered and not (node.type == DIR and self.selection.leads_to(child_path)):
                continue
            try:
                self._restore_node(node, dir_fd, child_path, child_rel, covered)
            except StrongroomError:
                raise
            except OSError as err:
                self._warn(f"{os.fsdecode(child_path)}: {err.strerror or err}")

    def _restore_node(self, node: Node, dir_fd: int, path: bytes, rel: bytes, full: bool) -> None:
        name = node.name
        if node.type == DIR:
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=dir_fd)
                    os.mkdir(name, 0o700, dir_fd=dir_fd)
            sub_fd = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
            )
            self.summary.dirs += 1
            try:
                if node.subtree is not None:
                    self._restore_tree(node.subtree, sub_fd, path, rel, full)
            except BaseException:
                os.close(sub_fd)
                raise

            def finish_dir() -> None:
                try:
                    self._apply_fd_meta(sub_fd, node, path)
                except OSError as err:
                    self._warn(f"{os.fsdecode(path)}: {err.strerror or err}")
                finally:
                    os.close(sub_fd)

            self._work.then(finish_dir)
            return
        if not full:
            return
        if not self._fresh:
            self._remove_existing(dir_fd, name)
        if node.type == FILE:
            self._restore_file(node, dir_fd, path, rel)
        elif node.type == SYMLINK:
            os.symlink(node.link_target, name, dir_fd=dir_fd)
            self._apply_path_meta(dir_fd, node, path)
            self.summary.other_entries += 1
        elif node.type in (FIFO, CHARDEV, BLOCKDEV, SOCKET):
            self._make_special(node, dir_fd, path)

    def _remove_existing(self, dir_fd: int, name: bytes) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
        os.unlink(name, dir_fd=dir_fd)

    def _make_special(self, node: Node, dir_fd: int, path: bytes) -> None:
        kinds = {
            FIFO: stat.S_IFIFO,
            CHARDEV: stat.S_IFCHR,
            BLOCKDEV: stat.S_IFBLK,
            SOCKET: stat.S_IFSOCK,
        }
        if node.type in (CHARDEV, BLOCKDEV) and not IS_ROOT:
            self._warn(f"{os.fsdecode(path)}: device nodes need root; skipped")
            return
        os.mknod(node.name, kinds[node.type] | 0o600, node.rdev, dir_fd=dir_fd)
        self._apply_path_meta(dir_fd, node, path)
        self.summary.other_entries += 1

    # --- files ---------------------------------------------------------------

    def _restore_file(self, node: Node, dir_fd: int, path: bytes, rel: bytes) -> None:
        self.summary.files += 1
        self.progress.files_done += 1
        if node.nlink > 1 and node.inode:
            key = (node.device, node.inode)
            first = self._links.get(key)
            if isinstance(first, int):  # linkat(AT_SYMLINK_FOLLOW) through /proc: no path limit
                os.link(
                    f"/proc/self/fd/{first}", node.name, dst_dir_fd=dir_fd, follow_symlinks=True
                )
                return
            if first is not None:
                os.link(first, node.name, src_dir_fd=self._root_fd, dst_dir_fd=dir_fd)
                return
            self._links[key] = rel if len(rel) < _PATH_MAX_SAFE else -1
        if len(node.chunks) <= 1 and node.nlink <= 1:  # later links need the file to exist now
            self._work.submit(self._whole_file_job(node, dir_fd, path), self._whole_file_sink(path))
            return
        fd = os.open(node.name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
        if node.nlink > 1 and self._links.get((node.device, node.inode)) == -1:
            self._links[(node.device, node.inode)] = os.open(
                f"/proc/self/fd/{fd}", os.O_PATH | os.O_CLOEXEC
            )
        damaged: list[str] = []
        offset = 0
        for cid, size in zip(node.chunks, node.chunk_sizes, strict=True):
            self._work.submit(self._chunk_job(fd, cid, size, offset), self._chunk_sink(damaged))
            offset += size

        def finish_file() -> None:
            try:
                if damaged:
                    self.summary.damaged.append(os.fsdecode(path))
                    self._warn(f"{os.fsdecode(path)}: damaged: {damaged[0]}")
                os.ftruncate(fd, offset)
                self._apply_fd_meta(fd, node, path)
            except OSError as err:
                self._warn(f"{os.fsdecode(path)}: {err.strerror or err}")
            finally:
                os.close(fd)

        self._work.then(finish_file)

    def _whole_file_job(self, node: Node, dir_fd: int, path: bytes):  # type: ignore[no-untyped-def]
        """Create, write and finish a file of at most one chunk, all on a worker.

        File creation dominates restores of many small files, and the kernel
        creates files in parallel, so it belongs on the pool. `dir_fd` stays
        open: the directory is finished only after this job is sunk.
        """
        repo = self.repo

        def job() -> tuple[int, str | None, list[str]]:
            data = b""
            error = None
            if node.chunks:
                try:
                    data = repo.load_chunk(node.chunks[0], BlobType.DATA, node.chunk_sizes[0])
                except StrongroomError as err:
                    error = str(err)
            try:
                fd = os.open(node.name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
                try:
                    if data and not _is_zero(data):
                        pwrite_all(fd, data, 0)
                    elif node.chunks:
                        os.ftruncate(fd, node.chunk_sizes[0])  # all zeros: a hole
                    warnings = self._fd_meta(fd, node, path)
                finally:
                    os.close(fd)
            except OSError as err:  # reported against this file, not a later one
                return 0, f"cannot write: {err.strerror or err}", []
            return len(data), error, warnings

        return job

    def _whole_file_sink(self, path: bytes):  # type: ignore[no-untyped-def]
        def sink(result: tuple[int, str | None, list[str]]) -> None:
            size, error, warnings = result
            for w in warnings:
                self._warn(w)
            if error is not None:
                self.summary.damaged.append(os.fsdecode(path))
                self._warn(f"{os.fsdecode(path)}: damaged: {error}")
            self.summary.bytes_written += size
            self.progress.bytes_done += size
            self._emit()

        return sink

    def _chunk_job(self, fd: int, cid: bytes, size: int, offset: int):  # type: ignore[no-untyped-def]
        repo = self.repo

        def job() -> tuple[int, str | None]:
            try:
                data = repo.load_chunk(cid, BlobType.DATA, size)
            except StrongroomError as err:
                return size, str(err)
            if len(data) != size:
                return size, f"chunk {cid.hex()[:16]} has {len(data)} bytes, expected {size}"
            if not _is_zero(data):
                try:
                    pwrite_all(fd, data, offset)
                except OSError as err:
                    return size, f"cannot write: {err.strerror or err}"
            return size, None

        return job

    def _chunk_sink(self, damaged: list[str]):  # type: ignore[no-untyped-def]
        def sink(result: tuple[int, str | None]) -> None:
            size, error = result
            if error is not None:
                damaged.append(error)
            else:
                self.summary.bytes_written += size
            self.progress.bytes_done += size
            self._emit()

        return sink

    # --- metadata ------------------------------------------------------------

    def _apply_fd_meta(self, fd: int, node: Node, path: bytes) -> None:
        for warning in self._fd_meta(fd, node, path):
            self._warn(warning)

    def _fd_meta(self, fd: int, node: Node, path: bytes) -> list[str]:
        """Owner, xattrs, mode, times of an open entry; returns warnings (thread-safe)."""
        warnings = []
        if IS_ROOT:
            os.fchown(fd, node.uid, node.gid)
        for key, value in node.xattrs.items():
            try:
                os.setxattr(fd, key, value)
            except OSError as err:
                if not self._xattr_skippable(key, err):
                    warnings.append(f"{os.fsdecode(path)}: xattr {key!r}: {err.strerror}")
        os.fchmod(fd, node.mode)
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))
        return warnings

    def _apply_path_meta(self, dir_fd: int, node: Node, path: bytes) -> None:
        """For entries that cannot be opened (symlinks, devices, FIFOs)."""
        name = node.name
        if IS_ROOT:
            os.chown(name, node.uid, node.gid, dir_fd=dir_fd, follow_symlinks=False)
        proc = b"/proc/self/fd/%d/%s" % (dir_fd, name)
        for key, value in node.xattrs.items():
            try:
                os.setxattr(proc, key, value, follow_symlinks=False)
            except OSError as err:
                if not self._xattr_skippable(key, err):
                    self._warn(f"{os.fsdecode(path)}: xattr {key!r}: {err.strerror}")
        if node.type != SYMLINK:
            os.chmod(name, node.mode, dir_fd=dir_fd)
        os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def _xattr_skippable(self, key: bytes, err: OSError) -> bool:
        """Non-user namespaces are expected to fail without privilege."""
        return (
            not IS_ROOT
            and not key.startswith(b"user.")
            and err.errno in (errno.EPERM, errno.EACCES)
        )

    def _warn(self, message: str) -> None:
        self.summary.warnings.append(message)
        self.progress.errors += 1

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= _PROGRESS_INTERVAL:
            self._last_report = now
            self.report(self.progress)
