"""File restore: recreate a point's tree with contents and metadata.

Chunks are fetched, authenticated and decompressed on a thread pool and
written with pwrite at their known offsets; all-zero chunks are skipped, so
sparse files stay sparse. Files of at most one chunk (most files of most
trees) are created, written and finished whole on the workers, in batches of
one directory's files: per-file work on the walking thread is what limits a
restore of small files (docs/performance.md, "Restore and check on both
cores"); a batch of tiny files runs on the walking thread when no job is in
flight. With one worker everything runs on the calling thread. Metadata is
applied after content (a directory's after all its entries, or their
creation would bump its mtime). A damaged chunk marks its files as damaged;
everything else is restored and the caller gets the list, to exit non-zero.

The tree is hostile until checked, and the target may hold anything (links
to the outside placed there, or raced in): `FileRestore` states what keeps
every write below the target (docs/design.md §9).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from strongroom.errors import (
    IntegrityError,
    Interrupted,
    PathNotFound,
    RepositoryError,
    StrongroomError,
)
from strongroom.model.names import name_problem, printable
from strongroom.model.scope import FULL, Scope, class_of
from strongroom.model.tree import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SYMLINK,
    Node,
    TreePath,
    decode_tree,
)
from strongroom.pipeline.inline_work import work_queue
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore
from strongroom.sources.block_targets import pwrite_all
from strongroom.sparse import data_runs
from strongroom.types import Progress, ProgressCallback, no_progress

IS_ROOT = os.geteuid() == 0
_PROGRESS_INTERVAL = 0.2
# A batch of whole files (one job): at most this many, or this many bytes of
# them. Large enough that the walking thread's cost per job (a future, a sink)
# is spread over many files, small enough that the workers stay balanced.
_BATCH_FILES = 64
_BATCH_BYTES = 4 << 20
# A batch whose files are all smaller than this runs on the walking thread when
# no job is in flight (so in order, and the walk never runs ahead of the
# bounded queue): their work is Python and system calls under the GIL, which a
# worker thread would only contend for; larger chunks are native work
# (decryption, zstd, BLAKE3 release the GIL from 2 KiB) that workers overlap.
_INLINE_BELOW = 64 << 10

# --overwrite (restic 0.17's): what happens to an entry already in the target.
OVERWRITE_MODES = ("always", "if-changed", "if-newer", "never")
# What restore did to a path, as `-v` says it (restic 0.17's words).
RESTORED, UPDATED, UNCHANGED, DELETED = "restored", "updated", "unchanged", "deleted"
FileReport = Callable[[str, bytes], None]  # (status, path as backed up), on the calling thread
# What to do with a file's name: create it (nothing there), leave what is there,
# rewrite the existing file in place (only what differs), or remove what is there
# and create it.
_NEW, _SKIP, _IN_PLACE, _REPLACE = range(4)
_STATUS = {_NEW: RESTORED, _SKIP: UNCHANGED, _IN_PLACE: UPDATED, _REPLACE: UPDATED}
_ABSENT = -2  # --dry-run: the frame of a directory that does not exist yet
_EXISTING_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    other_entries: int = 0
    bytes_written: int = 0
    # Of `files` and `other_entries`: entries that were there and differed
    # (rewritten) or were equal (left as found); entries --delete removed.
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    dry_run: bool = False
    damaged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    scope: str = "full"
    # Restored non-directories (files, symlinks, other entries) per class of a
    # seeded point (identical, modified, moved, own; model/origin.py).
    classes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_PATH_MAX_SAFE = 3072  # relative link sources longer than this use a descriptor
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HANDLE_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = {
    SYMLINK: stat.S_IFLNK,
    FIFO: stat.S_IFIFO,
    CHARDEV: stat.S_IFCHR,
    BLOCKDEV: stat.S_IFBLK,
    SOCKET: stat.S_IFSOCK,
}
_T = TypeVar("_T")
# A whole file's outcome: (bytes written, damage or None, warnings, status).
_WholeResult = tuple[int, str | None, list[str], str]


def _is_zero(data: bytes) -> bool:
    """All-zero chunk? Cheap for the usual case: real data rarely ends in zeros at both ends."""
    return bool(data) and data[0] == 0 and data[-1] == 0 and not data.strip(b"\0")


def _lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
    if dir_fd == _ABSENT:
        return None
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _newer(node: Node, st: os.stat_result) -> bool:
    return node.mtime_ns > st.st_mtime_ns


class Selection:
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


@dataclass
class _Frame:
    """A directory being restored: its descriptor, where it is, and what is left of it.

    A directory the scope does not select itself is *pending* (`fd` -1): it is
    created, with its metadata, only when an entry below it is written."""

    fd: int
    path: bytes  # as backed up, for messages and --include
    rel: bytes  # relative to the target, for hard links
    full: bool  # everything below is restored (not only the way to an include)
    nodes: Iterator[Node]
    node: Node | None  # the directory's own entry; None for the target itself
    entered: bool = False  # its tree is on `FileRestore._trees`
    names: set[bytes] = field(default_factory=set)  # its entries in the point (--delete)

    @property
    def pending(self) -> bool:
        return self.fd == -1


class FileRestore:
    """Restore one tree into `target`.

    Safety contract (docs/design.md §9): every entry is created relative to a
    directory descriptor opened with O_NOFOLLOW, by an exclusive call; what is
    in the way is removed, never followed or written through. Metadata is set
    through a descriptor of the entry just created (files, directories) or an
    O_PATH descriptor checked to be of the created type (symlinks, FIFOs,
    devices, sockets), never through a path: owner before mode, so setuid bits
    survive, and directories stay 0o700 until their contents are done. A hard
    link is made only to a file this restore created, without following
    symlinks, and is checked to be that file. Names were checked when the tree
    was decoded; nesting is bounded and a tree containing itself is damage.

    A `scope` (model/scope.py) restores part of a seeded point: entries it does
    not select are skipped, and a directory it does not select is created (by
    the same calls, with its metadata) only once an entry below it is written.
    A hard-linked name whose first name was skipped is restored as a whole
    file: links are still made only to files this restore created.

    What is already in the target (`overwrite`, restic 0.17's modes): `always`
    rewrites a regular file in place, only the chunks whose bytes differ, when
    it is the file's only name (st_nlink 1, checked on the descriptor opened
    with O_NOFOLLOW): writing it changes nothing outside the target. A file
    with other names, an entry of another type, and a directory this restore
    did not create are removed (directories by `shutil.rmtree`, which never
    follows a symlink) and created anew. `if-changed` leaves a regular file of
    the point's size and mtime alone; `if-newer` leaves whatever is not older
    than the point's entry; `never` leaves every existing entry. `delete`
    removes, in each directory restored whole, the entries the point lacks;
    `dry_run` decides and reports all of this and writes nothing.
    """

    def __init__(
        self,
        repo: ChunkStore,
        tree_id: bytes,
        target: str,
        includes: list[str] | None = None,
        progress: ProgressCallback = no_progress,
        workers: int = 4,
        cancel: threading.Event | None = None,
        scope: Scope | None = None,
        overwrite: str = "always",
        delete: bool = False,
        dry_run: bool = False,
        file_report: FileReport | None = None,
        totals: tuple[int, int] | None = None,
    ) -> None:
        if overwrite not in OVERWRITE_MODES:
            raise ValueError(f"overwrite mode {overwrite!r}")
        self.overwrite = overwrite
        self.delete = delete
        self.dry_run = dry_run
        self.file_report = file_report
        self.repo = repo
        self.tree_id = tree_id
        self.target = target
        self.selection = Selection(includes or [])
        self.scope = scope or Scope(FULL)
        self.report = progress
        self.cancel = cancel or threading.Event()
        self.summary = RestoreSummary(scope=str(self.scope.spec), dry_run=dry_run)
        self.progress = Progress(job="restore")
        if totals is not None:  # (files, bytes) the restore will go through
            self.progress.files_total, self.progress.bytes_total = totals
        # Directories this restore made or entered: never removed to make room.
        self._made: set[tuple[int, int]] = set()
        # Descriptors of directories this restore created empty: nothing in the
        # way of their entries, so no lstat per entry (a fresh restore of small
        # files pays nothing for --overwrite).
        self._fresh: set[int] = set()
        self._current = b""
        self._work = work_queue(workers, depth=4 * workers + 4)
        # Whole files waiting to be submitted as one job: (dir_fd, [(node, path)]).
        self._batch_fd = -1
        self._batch: list[tuple[Node, bytes]] = []
        self._batch_bytes = 0
        self._batch_large = False  # a file of _INLINE_BELOW bytes or more
        self._in_flight = 0  # jobs submitted and not yet sunk
        # First restored name of each hard-linked inode, once created: the (device,
        # inode) it got, and its path relative to the target or (beyond PATH_MAX)
        # an O_PATH descriptor of the file itself.
        self._links: dict[tuple[int, int], tuple[tuple[int, int], bytes | int]] = {}
        self._root_fd = -1
        self._fds: set[int] = set()  # open on this thread: closed in `run` on any exit
        self._trees = TreePath()
        self._last_report = 0.0
        self._matched_include: set[bytes] = set()

    def run(self) -> RestoreSummary:
        if not self.dry_run:
            os.makedirs(self.target, exist_ok=True)
        try:
            self._root_fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self.dry_run:
                raise
            self._root_fd = _ABSENT
        try:
            with self._work:
                self._walk()
                self._flush_batch()
                self._work.finish()
        finally:
            if self._root_fd >= 0:
                os.close(self._root_fd)
            for fd in self._fds:
                os.close(fd)
            for _, first in self._links.values():
                if isinstance(first, int):
                    os.close(first)
        missing = [
            os.fsdecode(i) for i in self.selection.includes if i not in self._matched_include
        ]
        # A scope may leave an include unvisited (outside it): nothing to restore there.
        if missing and not self.summary.files and not self.summary.dirs and self.scope.is_full:
            raise PathNotFound(f"not in the point: {', '.join(missing)}")
        self._emit(force=True)
        return self.summary

    # --- traversal -----------------------------------------------------------

    def _walk(self) -> None:
        """Depth first with an explicit stack: nesting costs no Python recursion."""
        self._trees.enter(self.tree_id)
        nodes = decode_tree(self.repo.load_chunk(self.tree_id, BlobType.TREE))
        stack = [_Frame(self._root_fd, b"", b"", False, iter(nodes), None)]
        while stack:
            frame = stack[-1]
            node = next(frame.nodes, None)
            if node is None:
                stack.pop()
                if frame.entered:
                    self._trees.leave()
                if frame.node is not None and not frame.pending:
                    self._finish_dir(frame)
                elif frame.node is None and self._deletes(frame):
                    self._then(functools.partial(self._delete_extra, self._root_fd, frame))
                continue
            frame.names.add(node.name)
            if self.cancel.is_set():
                raise Interrupted("interrupted")
            problem = name_problem(node.name)  # decode_tree refused it already: defence in depth
            if problem is not None:
                raise IntegrityError(f"tree under {printable(frame.path or b'/')} holds {problem}")
            path = frame.path + b"/" + node.name
            rel = frame.rel + b"/" + node.name if frame.rel else node.name
            covered = frame.full or self.selection.covers(path)
            if covered and not frame.full:
                self._matched_include.add(path)
            if not covered and not (node.type == DIR and self.selection.leads_to(path)):
                continue
            selected = covered and self.scope.selects(node)
            if node.type == DIR:
                if not selected and not self.scope.enters(path, node):
                    continue
            elif not selected:
                continue
            try:
                if selected and not self._materialize(stack):
                    continue
                if node.type == DIR:
                    stack.append(self._enter_dir(node, frame.fd, path, rel, covered, selected))
                else:
                    self._restore_leaf(node, frame.fd, path, rel)
            except StrongroomError:
                raise
            except (OSError, ValueError, OverflowError) as err:
                self._warn(f"{printable(path)}: {_reason(err)}")

    def _materialize(self, stack: list[_Frame]) -> bool:
        """Create the pending directories on the way to an entry about to be
        written, outermost first (the target itself is never pending). False if
        one cannot be made: it was warned about, and what is below it skipped,
        as for a directory that cannot be created when entered."""
        first = len(stack)
        while first > 0 and stack[first - 1].pending:
            first -= 1
        for i in range(first, len(stack)):
            frame = stack[i]
            assert frame.node is not None
            try:
                frame.fd = self._make_dir(frame.node, stack[i - 1].fd)
            except (OSError, ValueError, OverflowError) as err:
                self._warn(f"{printable(frame.path)}: {_reason(err)}")
                for skipped in stack[i:]:
                    skipped.nodes = iter(())
                return False
        return True

    def _make_dir(self, node: Node, dir_fd: int) -> int:
        name = node.name
        if self.dry_run:  # look into a directory that is there, write nothing
            st = _lstat(dir_fd, name)
            self.summary.dirs += 1
            if st is None or not stat.S_ISDIR(st.st_mode):
                return _ABSENT
            sub_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            self._fds.add(sub_fd)
            return sub_fd
        fresh = True
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:  # reuse a directory, replace anything else
            fresh = False
            if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                if self.overwrite == "never":
                    raise FileExistsError(
                        errno.EEXIST, "not a directory; kept (--overwrite never)"
                    ) from None
                os.unlink(name, dir_fd=dir_fd)
                os.mkdir(name, 0o700, dir_fd=dir_fd)
        sub_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)  # a symlink raced in: ELOOP
        self._fds.add(sub_fd)
        st = os.fstat(sub_fd)
        self._made.add((st.st_dev, st.st_ino))
        if fresh:
            self._fresh.add(sub_fd)
        self.summary.dirs += 1
        return sub_fd

    def _enter_dir(
        self, node: Node, dir_fd: int, path: bytes, rel: bytes, full: bool, selected: bool
    ) -> _Frame:
        """The frame of a directory: created now if the scope selects it, else pending."""
        sub_fd = self._make_dir(node, dir_fd) if selected else -1
        nodes: list[Node] = []
        entered = False
        if node.subtree is not None:
            try:
                self._trees.enter(node.subtree)
                entered = True
                nodes = decode_tree(self.repo.load_chunk(node.subtree, BlobType.TREE))
            except RepositoryError as err:  # damaged: its entries are lost, the rest goes on
                self.summary.damaged.append(printable(path))
                self._warn(f"{printable(path)}: damaged: {err}")
        return _Frame(sub_fd, path, rel, full, iter(nodes), node, entered)

    def _finish_dir(self, frame: _Frame) -> None:
        """Owner, mode and times once everything queued inside it is done."""
        node, fd, path = frame.node, frame.fd, frame.path
        assert node is not None

        def finish() -> None:
            try:
                if self._deletes(frame):
                    self._delete_extra(fd, frame)
                if not self.dry_run:
                    self._apply_fd_meta(fd, node, path)
            except (OSError, ValueError, OverflowError) as err:
                self._warn(f"{printable(path)}: {_reason(err)}")
            finally:
                if fd >= 0:
                    self._close(fd)

        self._then(finish)

    # --- what is in the way, what the point lacks -----------------------------

    def _deletes(self, frame: _Frame) -> bool:
        """--delete cleans this directory: all of it is restored (the target
        itself only when no --include narrows the restore)."""
        if not self.delete or frame.fd < 0:
            return False
        return frame.full if frame.node is not None else not self.selection.includes

    def _delete_extra(self, fd: int, frame: _Frame) -> None:
        """Remove the entries of directory `fd` that the point lacks: a symlink
        itself, a directory by `shutil.rmtree` relative to `fd` (it never follows
        a symlink, so nothing outside the target is touched)."""
        for name in sorted({os.fsencode(n) for n in os.listdir(fd)} - frame.names):
            path = frame.path + b"/" + name
            try:
                if not self.dry_run:
                    self._remove(fd, name)
            except OSError as err:
                self._warn(f"{printable(path)}: cannot delete: {_reason(err)}")
                continue
            self.summary.deleted += 1
            self._tell(DELETED, path)

    def _remove(self, dir_fd: int, name: bytes) -> None:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    def _clear(self, dir_fd: int, name: bytes) -> None:
        """Remove what is at `name` (a symlink itself, never what it points to); a
        directory too, unless this restore made it (a tree naming an entry twice)."""
        st = _lstat(dir_fd, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in self._made:
                raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
            shutil.rmtree(name, dir_fd=dir_fd)
            return
        os.unlink(name, dir_fd=dir_fd)

    def _create(self, make: Callable[[], _T], dir_fd: int, name: bytes) -> _T:
        """Run an exclusive create (O_EXCL, mkdirat, symlinkat, mknodat, linkat); if
        something is in the way, remove it without following it and try once more.

        Nothing is opened, truncated or written through an existing entry here:
        an entry placed (or raced) into the target is replaced, not reused (the
        one reuse is `_open_existing`'s, under its checks)."""
        try:
            return make()
        except FileExistsError:
            self._clear(dir_fd, name)
            return make()

    def _existing(self, dir_fd: int, name: bytes) -> os.stat_result | None:
        """What is at `name` now (None in a directory this restore made: nothing
        but what it wrote; a tree naming an entry twice is still met by the
        exclusive creates)."""
        return None if dir_fd in self._fresh else _lstat(dir_fd, name)

    def _plan(self, node: Node, st: os.stat_result | None) -> int:
        """What to do with an entry's name, by --overwrite and what is there."""
        if st is None:
            return _NEW
        if self.overwrite == "never" or (self.overwrite == "if-newer" and not _newer(node, st)):
            return _SKIP
        regular = stat.S_ISREG(st.st_mode)
        if node.type != FILE:
            return _REPLACE
        if (
            self.overwrite == "if-changed"
            and regular
            and st.st_size == node.size
            and st.st_mtime_ns == node.mtime_ns
        ):
            return _SKIP
        linked = node.nlink > 1 and node.inode != 0
        return _IN_PLACE if regular and st.st_nlink == 1 and not linked else _REPLACE

    def _open_existing(self, dir_fd: int, name: bytes, st: os.stat_result) -> int | None:
        """The existing file to rewrite in place: opened without following a
        symlink and checked on the descriptor to be the regular file seen, with
        no other name (a hard link to a file outside the target is replaced,
        never written through). None: replace it instead."""
        flags = _EXISTING_FLAGS | (os.O_RDONLY if self.dry_run else os.O_RDWR)
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            return None
        now = os.fstat(fd)
        if (
            not stat.S_ISREG(now.st_mode)
            or now.st_nlink != 1
            or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
        ):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
        return fd

    def _tell(self, status: str, path: bytes) -> None:
        if self.file_report is not None:
            self.file_report(status, path)

    def _count(self, status: str) -> None:
        if status == UPDATED:
            self.summary.updated += 1
        elif status == UNCHANGED:
            self.summary.unchanged += 1

    def _restore_leaf(self, node: Node, dir_fd: int, path: bytes, rel: bytes) -> None:
        if node.type == FILE:
            self._restore_file(node, dir_fd, path, rel)
            self._count_class(node)
            return
        name = node.name
        if node.type in (CHARDEV, BLOCKDEV) and not IS_ROOT:
            self._warn(f"{printable(path)}: device nodes need root; skipped")
            return
        st = self._existing(dir_fd, name)
        plan = self._plan(node, st)
        status = RESTORED if plan == _NEW else UPDATED
        if st is not None and plan != _SKIP and self._same_entry(node, dir_fd, st):
            status = UNCHANGED  # only its metadata is set again
        elif plan == _SKIP:
            status = UNCHANGED
        self.summary.other_entries += 1
        self._count_class(node)
        self._count(status)
        self._tell(status, path)
        if self.dry_run or plan == _SKIP:
            return
        if status != UNCHANGED:
            if node.type == SYMLINK:
                target = node.link_target
                self._create(lambda: os.symlink(target, name, dir_fd=dir_fd), dir_fd, name)
            else:
                kind = _KINDS[node.type] | 0o600
                self._create(lambda: os.mknod(name, kind, node.rdev, dir_fd=dir_fd), dir_fd, name)
        handle = os.open(name, _HANDLE_FLAGS, dir_fd=dir_fd)
        try:
            if stat.S_IFMT(os.fstat(handle).st_mode) != _KINDS[node.type]:
                raise OSError(errno.EEXIST, "replaced while being restored; left as found")
            self._apply_handle_meta(handle, node, path)
        finally:
            os.close(handle)

    def _same_entry(self, node: Node, dir_fd: int, st: os.stat_result) -> bool:
        """A symlink with the same target, or a FIFO, device or socket of the same kind."""
        if stat.S_IFMT(st.st_mode) != _KINDS[node.type]:
            return False
        if node.type == SYMLINK:
            return os.readlink(node.name, dir_fd=dir_fd) == node.link_target
        return node.type not in (CHARDEV, BLOCKDEV) or st.st_rdev == node.rdev

    def _count_class(self, node: Node) -> None:
        word = class_of(node).word
        self.summary.classes[word] = self.summary.classes.get(word, 0) + 1

    def _close(self, fd: int) -> None:
        self._fds.discard(fd)
        self._fresh.discard(fd)
        os.close(fd)

    # --- files ---------------------------------------------------------------

    def _restore_file(self, node: Node, dir_fd: int, path: bytes, rel: bytes) -> None:
        self.summary.files += 1
        self.progress.files_done += 1
        self._current = path  # escaped only when a report goes out
        name = node.name
        linked = node.nlink > 1 and node.inode != 0
        if linked:
            first = self._links.get((node.device, node.inode))
            if first is not None:
                plan = self._plan(node, self._existing(dir_fd, name))
                self._done(_STATUS[plan], path)
                if plan != _SKIP and not self.dry_run:
                    self._link(first, name, dir_fd)
                return
        if len(node.chunks) <= 1 and not linked:  # later links need the file to exist now
            self._add_to_batch(node, dir_fd, path)
            return
        st = self._existing(dir_fd, name)
        plan = self._plan(node, st)
        fd = self._open_existing(dir_fd, name, st) if plan == _IN_PLACE and st else None
        if fd is None and plan == _IN_PLACE:
            plan = _REPLACE
        if plan == _SKIP or (self.dry_run and fd is None):
            self._done(_STATUS[plan], path)
            self.progress.bytes_done += node.size
            if plan != _SKIP:  # --dry-run: what would be written
                self.summary.bytes_written += node.size
            self._emit()
            return
        in_place = fd is not None
        if fd is None:
            fd = self._create(
                lambda: os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd), dir_fd, name
            )
        self._fds.add(fd)
        if linked:  # recorded only now that it exists: a failed create links nothing
            now = os.fstat(fd)
            source: bytes | int = rel
            if len(rel) >= _PATH_MAX_SAFE:
                source = os.open(f"/proc/self/fd/{fd}", os.O_PATH | os.O_CLOEXEC)
            self._links[(node.device, node.inode)] = ((now.st_dev, now.st_ino), source)
        damaged: list[str] = []
        # Anything rewritten (a new or replaced file: everything)?
        changed = [not in_place or st is None or st.st_size != node.size]
        offset = 0
        for cid, size in zip(node.chunks, node.chunk_sizes, strict=True):
            job = self._chunk_job(fd, cid, size, offset, in_place)
            self._submit(job, self._chunk_sink(damaged, changed))
            offset += size

        def finish_file() -> None:
            try:
                if damaged:
                    self.summary.damaged.append(printable(path))
                    self._warn(f"{printable(path)}: damaged: {damaged[0]}")
                if not self.dry_run:
                    os.ftruncate(fd, offset)
                    self._apply_fd_meta(fd, node, path)
            except (OSError, ValueError, OverflowError) as err:
                self._warn(f"{printable(path)}: {_reason(err)}")
            finally:
                self._close(fd)
            status = RESTORED if plan == _NEW else UPDATED if changed[0] else UNCHANGED
            self._done(status, path)

        self._then(finish_file)

    def _done(self, status: str, path: bytes) -> None:
        """A file is restored, updated or left unchanged: counted and told."""
        self._count(status)
        self._tell(status, path)

    def _link(self, first: tuple[tuple[int, int], bytes | int], name: bytes, dir_fd: int) -> None:
        """Another name of a file this restore created: linkat without following a
        symlink (through /proc: the very inode, whatever its path now), then checked
        to be that file; anything else that got linked is removed again."""
        ident, source = first

        def make() -> None:
            if isinstance(source, int):
                proc = f"/proc/self/fd/{source}"
                os.link(proc, name, dst_dir_fd=dir_fd, follow_symlinks=True)
            else:
                os.link(
                    source, name, src_dir_fd=self._root_fd, dst_dir_fd=dir_fd, follow_symlinks=False
                )

        self._create(make, dir_fd, name)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != ident:
            os.unlink(name, dir_fd=dir_fd)
            raise OSError(errno.EXDEV, "the first name of this hard link was replaced; not linked")

    # --- whole files, in batches --------------------------------------------

    def _submit(self, job: Callable[[], _T], sink: Callable[[_T], None]) -> None:
        """Queue a job after the batch waiting (results are sunk in order)."""
        self._flush_batch()
        self._queue_job(job, sink)

    def _queue_job(self, job: Callable[[], _T], sink: Callable[[_T], None]) -> None:
        def counted(result: _T) -> None:
            self._in_flight -= 1
            sink(result)

        self._in_flight += 1
        self._work.submit(job, counted)

    def _then(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything before it, the batch waiting too, is done."""
        self._flush_batch()
        self._work.then(callback)

    def _add_to_batch(self, node: Node, dir_fd: int, path: bytes) -> None:
        if dir_fd != self._batch_fd:
            self._flush_batch()
            self._batch_fd = dir_fd
        self._batch.append((node, path))
        self._batch_bytes += node.size
        self._batch_large = self._batch_large or node.size >= _INLINE_BELOW
        if len(self._batch) >= _BATCH_FILES or self._batch_bytes >= _BATCH_BYTES:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if not self._batch:
            return
        batch, dir_fd, large = self._batch, self._batch_fd, self._batch_large
        self._batch, self._batch_fd, self._batch_bytes, self._batch_large = [], -1, 0, False
        job, sink = self._whole_files_job(batch, dir_fd), self._whole_files_sink(batch)
        if large or self._in_flight:
            self._queue_job(job, sink)
        else:  # everything before it is done: here, now, is the same order
            sink(job())

    def _whole_files_job(self, batch: list[tuple[Node, bytes]], dir_fd: int):  # type: ignore[no-untyped-def]
        """Create, write and finish files of at most one chunk, all on a worker.

        File creation dominates restores of many small files, and the kernel
        creates files in parallel, so it belongs on the pool. `dir_fd` stays
        open: the directory is finished only after this job is sunk.
        """

        def job() -> list[_WholeResult]:
            return [self._whole_file(node, dir_fd, path) for node, path in batch]

        return job

    def _whole_file(self, node: Node, dir_fd: int, path: bytes) -> _WholeResult:
        """(bytes written, damage or None, warnings, status) of one whole file
        (thread-safe: what is in the way is looked at here, on the worker)."""
        name = node.name
        st = self._existing(dir_fd, name)
        plan = self._plan(node, st)
        if plan == _SKIP:
            return 0, None, [], UNCHANGED
        if self.dry_run and plan != _IN_PLACE:  # would be written whole
            return node.size, None, [], RESTORED if plan == _NEW else UPDATED
        data = b""
        error = None
        if node.chunks:
            want = node.chunk_sizes[0]
            try:
                data = self.repo.load_chunk(node.chunks[0], BlobType.DATA, want)
            except StrongroomError as err:
                error = str(err)
            if error is None and len(data) != want:
                error = f"chunk {node.chunks[0].hex()[:16]} has {len(data)} bytes, expected {want}"
            if error is not None:
                data = b""  # nothing of a chunk that is not what the tree says
        if plan == _IN_PLACE and error is None and st is not None:
            fd = self._open_existing(dir_fd, name, st)
            if fd is not None:
                return self._rewrite_whole(fd, node, path, data, st.st_size)
        if self.dry_run:
            return node.size, error, [], UPDATED
        try:  # a directory this restore made in the way is a warning, as for other entries
            fd = self._create(
                lambda: os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd), dir_fd, name
            )
        except OSError as err:
            return 0, None, [f"{printable(path)}: {_reason(err)}"], ""  # not restored
        status = RESTORED if plan == _NEW else UPDATED
        try:
            if data and not _is_zero(data):
                view = memoryview(data)
                for start, end in data_runs(data):
                    pwrite_all(fd, view[start:end], start)
            os.ftruncate(fd, node.size)  # all zeros or damaged: a hole
            warnings = self._fd_meta(fd, node, path)
        except (OSError, ValueError, OverflowError) as err:  # against this file
            return 0, f"cannot write: {_reason(err)}", [], status
        finally:
            os.close(fd)
        return len(data), error, warnings, status

    def _rewrite_whole(
        self, fd: int, node: Node, path: bytes, data: bytes, old_size: int
    ) -> _WholeResult:
        """An existing file of one chunk: rewritten only if its bytes differ."""
        try:
            same = old_size == node.size and os.pread(fd, len(data), 0) == data
            if same or self.dry_run:
                warnings = [] if self.dry_run else self._fd_meta(fd, node, path)
                return (0 if same else len(data)), None, warnings, UNCHANGED if same else UPDATED
            pwrite_all(fd, data, 0)
            os.ftruncate(fd, node.size)
            return len(data), None, self._fd_meta(fd, node, path), UPDATED
        except (OSError, ValueError, OverflowError) as err:
            return 0, f"cannot write: {_reason(err)}", [], UPDATED
        finally:
            os.close(fd)

    def _whole_files_sink(self, batch: list[tuple[Node, bytes]]):  # type: ignore[no-untyped-def]
        def sink(results: list[_WholeResult]) -> None:
            for (node, path), (size, error, warnings, status) in zip(batch, results, strict=True):
                for w in warnings:
                    self._warn(w)
                if error is not None:
                    self.summary.damaged.append(printable(path))
                    self._warn(f"{printable(path)}: damaged: {error}")
                self.summary.bytes_written += size
                self.progress.bytes_done += node.size
                if status:
                    self._done(status, path)
            self._emit()

        return sink

    def _chunk_job(self, fd: int, cid: bytes, size: int, offset: int, in_place: bool):  # type: ignore[no-untyped-def]
        """Load a chunk and write it at `offset`: into a new file everything but
        its zero pieces (holes); into an existing file only if its bytes differ
        (with --dry-run: only compared). Returns (size, damage, written)."""
        repo, dry_run = self.repo, self.dry_run

        def job() -> tuple[int, str | None, bool]:
            try:
                data = repo.load_chunk(cid, BlobType.DATA, size)
            except StrongroomError as err:
                return size, str(err), False
            if len(data) != size:
                return size, f"chunk {cid.hex()[:16]} has {len(data)} bytes, expected {size}", False
            try:
                if in_place:
                    if os.pread(fd, size, offset) == data:
                        return size, None, False
                    if not dry_run:
                        pwrite_all(fd, data, offset)
                    return size, None, True
                if not _is_zero(data):
                    view = memoryview(data)
                    for start, end in data_runs(data):
                        pwrite_all(fd, view[start:end], offset + start)
            except OSError as err:
                return size, f"cannot write: {err.strerror or err}", False
            return size, None, True

        return job

    def _chunk_sink(self, damaged: list[str], changed: list[bool]):  # type: ignore[no-untyped-def]
        def sink(result: tuple[int, str | None, bool]) -> None:
            size, error, written = result
            if error is not None:
                damaged.append(error)
            elif written:  # or, with --dry-run, would be
                changed[0] = True
                self.summary.bytes_written += size
            self.progress.bytes_done += size
            self._emit()

        return sink

    # --- metadata ------------------------------------------------------------

    def _apply_fd_meta(self, fd: int, node: Node, path: bytes) -> None:
        for warning in self._fd_meta(fd, node, path):
            self._warn(warning)

    def _fd_meta(self, fd: int, node: Node, path: bytes) -> list[str]:
        """Owner, xattrs, mode, times of an open file or directory; returns warnings
        (thread-safe). The owner goes first: chown clears setuid/setgid bits."""
        warnings = []
        if IS_ROOT:
            os.fchown(fd, node.uid, node.gid)
        for key, value in node.xattrs.items():
            try:
                os.setxattr(fd, key, value)
            except OSError as err:
                if not self._xattr_skippable(key, err):
                    warnings.append(f"{printable(path)}: xattr {printable(key)}: {err.strerror}")
        os.fchmod(fd, node.mode)
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))
        return warnings

    def _apply_handle_meta(self, handle: int, node: Node, path: bytes) -> None:
        """For entries that cannot be opened (symlinks, devices, FIFOs, sockets), via
        an O_PATH descriptor: /proc/self/fd/N names the entry itself (a symlink's
        magic link ends at the symlink, not at its target), so no path is resolved
        twice and nothing swapped in meanwhile is touched."""
        proc = f"/proc/self/fd/{handle}"
        if IS_ROOT:
            os.chown(proc, node.uid, node.gid)
        for key, value in node.xattrs.items():
            try:
                os.setxattr(proc, key, value)
            except OSError as err:
                if not self._xattr_skippable(key, err):
                    self._warn(f"{printable(path)}: xattr {printable(key)}: {err.strerror}")
        if node.type != SYMLINK:
            os.chmod(proc, node.mode)
        os.utime(proc, ns=(node.atime_ns, node.mtime_ns))

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
            self.progress.current = printable(self._current)
            self.report(self.progress)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError):
        return str(err.strerror or err)
    return str(err) or type(err).__name__
