"""File backup: walk trees, chunk changed files, store chunks and trees, record a point.

One pass, bounded memory. The walking thread reads and cuts files (FastCDC
releases the GIL); a small pool hashes, compresses and encrypts chunks; the
walking thread sinks results in order into packs (uploads run on their own
thread). Files whose size, mtime, ctime and inode match the parent point are
not read at all: their chunk lists are reused.

Against seeds (an optional `SeedMatcher`, pipeline/seed_match.py) every entry
is classified when its directory's tree is stored, which is when every
child's chunk list is final; entries passed through from the parent point are
classified too (the seed set may differ from the parent's). With
`--trust-seed-metadata` a file whose path, size, mode and mtime equal a
seed's takes the seed's chunk list without being opened.

With `changed_paths` (paths relative to the one backed-up tree, from the change
journal, trackers/journal.py) and a parent point, only those paths and the
directories on their way are looked at: each directory on the way is stat'ed
and starts from the parent's entries; each changed name is lstat'ed (gone:
dropped) and backed up as a full walk would (a changed directory is walked
whole, with the usual comparison against the parent). Every other entry is
the parent's, as it was. The point equals a full walk's for the same tree
state, except the atime of entries not looked at (docs/protect.md).

With `read_from` (a snapshot of the one tree, sources/btrfs.py) the tree's
entries are read below that folder but recorded under the tree's own path, so
restore, the timeline and the journal's parent work as for a live read. The
snapshot's device number is recorded as the tree's (a snapshot has its own,
new each cycle; inode numbers and times are the tree's): unchanged entries
still match the parent point's and are not read again. `omit` names recorded
paths left out of the point (the snapshot folder when it is inside the tree).

With `copies` (reflink copies of changed files, sources/reflink.py) a regular
file found at a copied path, still the copied inode, is recorded with the stat
and xattrs it had when copied and its bytes are read from the copy (private:
no re-check); every other entry is read live.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from strongroom.chunking import CdcChunker
from strongroom.cpu import resolve_jobs
from strongroom.errors import Interrupted, SourceError, StrongroomError
from strongroom.model.origin import ORIGIN_KEY, PointSeeds, encode_lacks
from strongroom.model.tree import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FILE,
    ID_SIZE,
    SYMLINK,
    Node,
    decode_wires,
    encode_wires,
)
from strongroom.pipeline.ordered import OrderedWork
from strongroom.pipeline.seed_match import SeedMatcher
from strongroom.pipeline.small_files import Sealed, SmallFile, SmallFileBatch
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore
from strongroom.sources.exclude import Excluder
from strongroom.sources.files import (
    list_dir,
    node_from_stat,
    node_type,
    open_dir,
    open_file,
    read_link,
    read_xattrs,
    read_xattrs_of,
)
from strongroom.sources.reflink import CopiedFile
from strongroom.types import Progress, ProgressCallback, no_progress

if TYPE_CHECKING:
    # Imported when the workers start (pickle and sockets: a no-change backup
    # does not pay for them).
    from strongroom.pipeline.workers import WorkerPool

_PROGRESS_INTERVAL = 0.2
# Worker processes start once this much work (bytes to read and seal, plus
# _FILE_COST per small file) has been queued: a no-change or tiny incremental
# backup never forks them.
_START_WORKERS_AFTER = 8 * 1024 * 1024
_FILE_COST = 4096


@dataclass
class BackupOptions:
    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    one_file_system: bool = False
    dry_run: bool = False
    skip_dirs: list[str] = field(default_factory=list)  # e.g. the repository itself
    workers: int = 2  # sealing threads (before worker processes start, or with jobs 1)
    # Worker processes (pipeline/workers.py); None: the default (strongroom/cpu.py).
    # 1: everything in this process, on `workers` threads.
    jobs: int | None = None
    scan_totals: bool = False  # count the tree first (for an ETA)
    # --exclude-if-present / --exclude-caches: (marker name, header or None); a
    # folder holding such a marker is recorded with the marker alone.
    exclude_if_present: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    exclude_larger_than: int | None = None  # regular files larger are left out
    # Told of every regular file as the walk meets it: (status, path, reasons);
    # status "new", "changed" (reasons: size, mtime, inode, ctime) or
    # "unchanged" (`backup -v` / `-vv`). None: nobody asks, nothing is computed.
    file_report: Callable[[str, bytes, list[str]], None] | None = None
    # The change journal's paths, relative to the one tree in `paths` (None: walk all).
    changed_paths: set[bytes] | None = None
    # Read the one tree in `paths` from this folder (a snapshot of it) instead.
    read_from: str | None = None
    omit: set[bytes] = field(default_factory=set)  # absolute recorded paths left out
    # Reflink copies of changed files by absolute recorded path, in `copy_folder`.
    copies: dict[bytes, CopiedFile] = field(default_factory=dict)
    copy_folder: str | None = None


@dataclass
class BackupSummary:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    other_entries: int = 0
    total_files: int = 0
    total_bytes: int = 0
    bytes_read: int = 0
    chunks_new: int = 0
    data_added: int = 0
    data_added_stored: int = 0
    tree_id: str = ""
    warnings: list[str] = field(default_factory=list)
    unreadable: int = 0
    files_from_seed: int = 0  # --trust-seed-metadata: taken from a seed unread
    excluded_dirs: int = 0  # folders left empty by --exclude-if-present/--exclude-caches

    def as_dict(self) -> dict[str, object]:
        """The fields but the tree id (the point has it); warnings as a count."""
        doc = asdict(self)
        del doc["tree_id"]
        doc["warnings"] = len(self.warnings)
        return doc


def _wire_matches_stat(wire: dict[str, Any], st: os.stat_result, dev: int | None = None) -> bool:
    """True if a non-directory's entry in the parent tree is exactly what a fresh
    walk would record: same type, mode, owner, times, inode, links, size (so its
    content, xattrs and link target are unchanged too: all of those move ctime).
    Directories always return False: what is below them must be walked.
    `dev`: the device number to record instead of st_dev (a snapshot's)."""
    kind = wire.get("t")
    if kind == DIR or kind != node_type(st.st_mode):
        return False
    if (
        wire.get("m") != stat.S_IMODE(st.st_mode)
        or wire.get("u") != st.st_uid
        or wire.get("g") != st.st_gid
        or wire.get("mt") != st.st_mtime_ns
        or wire.get("at") != st.st_atime_ns
        or wire.get("ct") != st.st_ctime_ns
        or wire.get("ino", 0) != st.st_ino
        or wire.get("dev", 0) != (st.st_dev if dev is None else dev)
        or wire.get("nl", 1) != st.st_nlink
    ):
        return False
    if kind == FILE:
        content = wire.get("c", b"")
        sizes = wire.get("cs", [])
        return (
            wire.get("sz") == st.st_size
            and type(content) is bytes
            and type(sizes) is list
            and len(content) == ID_SIZE * len(sizes)
        )
    if kind in (CHARDEV, BLOCKDEV):
        return bool(wire.get("rd", 0) == st.st_rdev)
    return True


class _Virtual:
    """A directory on the way to a backed-up path (e.g. `/home` for `/home/ann`)."""

    def __init__(self) -> None:
        self.children: dict[bytes, _Virtual | None] = {}  # None marks a backed-up path


_WHOLE = None  # in a change trie: this entry itself changed (walk it whole)
ChangeTrie = dict[bytes, "ChangeTrie | None"]


def change_trie(paths: set[bytes]) -> ChangeTrie:
    """The changed relative paths as nested dicts by name; None marks a changed
    entry (what is below it is walked anyway, so deeper paths are dropped).
    Empty, '.' and '..' parts are skipped (the journal never writes them)."""
    root: ChangeTrie = {}
    for path in sorted(paths, key=len):
        parts = [p for p in path.split(b"/") if p not in (b"", b".", b"..")]
        node: ChangeTrie | None = root
        for i, part in enumerate(parts):
            assert node is not None
            if i == len(parts) - 1:
                node[part] = _WHOLE
                break
            child = node.setdefault(part, {})
            if child is None:
                break  # an ancestor changed: walked whole
            node = child
    return root


def _virtual_root(paths: list[bytes]) -> _Virtual:
    root = _Virtual()
    for path in sorted(paths):
        parts = [p for p in path.split(b"/") if p]
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            child = node.children.get(part, _Virtual())
            if child is None:
                break  # an ancestor is backed up whole already
            if last:
                node.children[part] = None
                break
            node.children[part] = child
            node = child
    return root


class FileBackup:
    """One backup run. Call `run()` once."""

    def __init__(
        self,
        repo: ChunkStore,
        options: BackupOptions,
        parent_tree: bytes | None = None,
        progress: ProgressCallback = no_progress,
        cancel: threading.Event | None = None,
        matcher: SeedMatcher | None = None,
    ) -> None:
        self.repo = repo
        self.matcher = matcher
        self.seed_record: PointSeeds | None = None  # set by run() when matching seeds
        self.options = options
        self.parent_tree = parent_tree
        self.report = progress
        self.cancel = cancel or threading.Event()
        self.summary = BackupSummary()
        self.progress = Progress(job="backup")
        self.excluder = Excluder(options.excludes)
        cfg = repo.config
        self.chunker = CdcChunker(cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max, repo.master.chunker_seed)
        self.small_file = cfg.cdc_min
        jobs = resolve_jobs(options.jobs)
        self._work = OrderedWork(options.workers, depth=2 * max(options.workers, jobs) + 2)
        self._jobs = jobs
        self._pool: WorkerPool | None = None  # started by _workers()
        self._credit = 0  # work queued before the workers started
        # The threshold in bytes (tests set 0 to start the workers at once).
        self._start_after = int(os.environ.get("STRONGROOM_START_WORKERS_AFTER", "-1"))
        if self._start_after < 0:
            self._start_after = _START_WORKERS_AFTER
        self._hardlinks: dict[tuple[int, int], Node] = {}
        self._skip: set[tuple[int, int]] = set()
        for path in options.skip_dirs:
            try:
                st = os.stat(path)
            except OSError:
                continue
            self._skip.add((st.st_dev, st.st_ino))
        self._last_report = 0.0
        # --dry-run: chunks the store did not know, with their lengths (a backup
        # through a server asks the server about them at the end: `dry_new`)
        self._dry_seen: dict[bytes, int] = {}
        self._dropped: set[int] = set()  # id() of nodes whose file turned out unreadable
        self._batch = SmallFileBatch()
        self._alias: tuple[bytes, bytes] | None = None  # (recorded path, read path)
        self._devs: dict[int, int] = {}  # a snapshot's device -> the tree's
        if options.read_from is not None:
            if len(options.paths) != 1:
                raise SourceError("reading from a snapshot goes with exactly one tree")
            tree = os.path.abspath(options.paths[0])
            alias = os.path.abspath(options.read_from)
            self._alias = (os.fsencode(tree), os.fsencode(alias))
            self._devs[os.stat(alias).st_dev] = os.stat(tree).st_dev
        self._copy_fd: int | None = None
        self._copied: set[bytes] = set()  # recorded paths read from their copy

    # --- entry point ---------------------------------------------------------

    @property
    def dry_new(self) -> dict[bytes, int]:
        """After a --dry-run: the data chunks the store did not know, by length."""
        return self._dry_seen

    def run(self) -> BackupSummary:
        paths = [os.fsencode(os.path.abspath(p)) for p in self.options.paths]
        for p in paths:
            if not os.path.lexists(p):
                raise SourceError(f"{os.fsdecode(p)}: no such file or directory")
        if self.options.scan_totals:
            threading.Thread(target=self._scan_totals, args=(paths,), daemon=True).start()
        if self.options.copies and self.options.copy_folder:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            self._copy_fd = os.open(self.options.copy_folder, flags)
        try:
            with self._work:
                nodes = self._backup_virtual(b"", _virtual_root(paths), self.parent_tree)
                root: dict[str, bytes] = {}
                self._then(lambda: root.update(id=self._store_wires(self._wires(b"", nodes))))
                self._flush_batch()
                self._work.finish()
            if self._pool is not None:
                self._pool.close()
            if self.matcher is not None:
                self.seed_record = self._seed_record(self.matcher)
            if not self.options.dry_run:
                self.repo.flush()
        except BaseException:
            if self._pool is not None:
                self._pool.close(kill=True)
            if not self.options.dry_run:
                self.repo.abandon()
            raise
        finally:
            if self._copy_fd is not None:
                os.close(self._copy_fd)
                self._copy_fd = None
        stats = self.repo.stats
        self.summary.chunks_new = stats.chunks_added
        self.summary.data_added = stats.bytes_added_raw
        self.summary.data_added_stored = stats.bytes_added_stored
        self.summary.tree_id = root["id"].hex()
        self._emit(force=True)
        return self.summary

    # --- traversal -----------------------------------------------------------

    def _parent_nodes(self, tree_id: bytes | None) -> dict[bytes, Node]:
        """The parent point's version of a directory as nodes by name."""
        nodes = {}
        for name, wire in self._parent_wires(tree_id)[0].items():
            node = self._old_node(wire, name)
            if node is not None:
                nodes[name] = node
        return nodes

    def _backup_virtual(
        self, path: bytes, virtual: _Virtual, parent_tree: bytes | None
    ) -> list[Node]:
        """Nodes of one directory on the way to the backed-up paths."""
        old = self._parent_nodes(parent_tree)
        nodes: list[Node] = []
        dir_fd = open_dir(None, path or b"/")
        alias_fd: int | None = None
        try:
            for name in sorted(virtual.children):
                child_virtual = virtual.children[name]
                child_path = path + b"/" + name
                read_fd, read_name = dir_fd, name
                if child_virtual is None and self._alias and child_path == self._alias[0]:
                    alias_fd = open_dir(None, os.path.dirname(self._alias[1]) or b"/")
                    read_fd, read_name = alias_fd, os.path.basename(self._alias[1])
                try:
                    st = os.stat(read_name, dir_fd=read_fd, follow_symlinks=False)
                except OSError as err:
                    raise SourceError(f"{os.fsdecode(child_path)}: {err.strerror}") from None
                changed = self.options.changed_paths
                prev = old.get(name)
                if (
                    child_virtual is None
                    and changed is not None
                    and prev is not None
                    and prev.type == DIR
                    and stat.S_ISDIR(st.st_mode)
                ):
                    node = self._node(name, st)
                    assert node is not None
                    trie = change_trie(changed)
                    self._dir_changed(read_fd, read_name, child_path, node, prev, trie)
                elif child_virtual is None:
                    node = self._entry(read_fd, read_name, st, child_path, prev, top=True)
                    if node is not None:
                        node.name = name  # read from the alias, recorded as the tree
                else:
                    node = node_from_stat(name, st)
                    if node is None or node.type != DIR:
                        raise SourceError(f"{os.fsdecode(child_path)} is not a directory")
                    node.xattrs = read_xattrs(dir_fd, name)
                    prev = old.get(name)
                    children = self._backup_virtual(
                        child_path, child_virtual, prev.subtree if prev else None
                    )
                    self._finish_dir(node, children, path=child_path)
                if node is not None:
                    nodes.append(node)
        finally:
            for fd in (dir_fd, alias_fd):
                if fd is not None:
                    self._forget_dir_fd(fd)
                    os.close(fd)
        return nodes

    def _entry(
        self,
        dir_fd: int,
        name: bytes,
        st: os.stat_result,
        path: bytes,
        old: Node | None,
        top: bool = False,
    ) -> Node | None:
        """Back up one entry of `dir_fd`; None if it is excluded or unreadable."""
        if self.cancel.is_set():
            raise Interrupted("interrupted")
        if not top and self.excluder and self.excluder.excluded(path, name):
            return None
        if path in self.options.omit:
            return None
        copy = self.options.copies.get(path)
        if (
            copy is not None
            and self._copy_fd is not None
            and stat.S_ISREG(st.st_mode)
            and (st.st_dev, st.st_ino) == (copy.stat.st_dev, copy.stat.st_ino)
        ):
            try:
                return self._copied_file(name, path, copy, old)
            except OSError as err:
                self._unreadable(path, err)
                return None
        node = self._node(name, st)
        if node is None:
            self._warn(f"{os.fsdecode(path)}: unsupported file type, skipped")
            return None
        # An unchanged ctime proves the xattrs did not change either.
        same_meta = old is not None and old.type == node.type and old.ctime_ns == node.ctime_ns
        try:
            if node.type == FILE:
                self.summary.total_files += 1
                self.progress.files_done += 1
                self._file(dir_fd, name, path, node, old if same_meta else None, old is not None)
            elif node.type == DIR:
                self._dir(dir_fd, name, st, path, node, old, same_meta)
            else:
                self.summary.other_entries += 1
                node.xattrs = old.xattrs if same_meta and old else read_xattrs(dir_fd, name)
                if node.type == SYMLINK:
                    node.link_target = read_link(dir_fd, name)
        except FileNotFoundError:
            return None  # vanished while we looked: it was never there
        except OSError as err:
            self._unreadable(path, err)
            return None
        return node

    def _copied_file(self, name: bytes, path: bytes, copy: CopiedFile, old: Node | None) -> Node:
        """A changed file recorded as it was copied, its bytes read from the copy."""
        assert self._copy_fd is not None
        node = self._node(name, copy.stat)
        assert node is not None and node.type == FILE
        same_meta = old is not None and old.type == FILE and old.ctime_ns == node.ctime_ns
        self.summary.total_files += 1
        self.progress.files_done += 1
        self._copied.add(path)
        reuse = old if same_meta else None
        self._file(self._copy_fd, copy.name, path, node, reuse, old is not None)

        def settle() -> None:  # after the read: the copy has no xattrs of its own
            node.xattrs = copy.xattrs

        self._then(settle)
        return node

    def _dir(
        self,
        dir_fd: int,
        name: bytes,
        st: os.stat_result,
        path: bytes,
        node: Node,
        old: Node | None,
        same_meta: bool,
    ) -> None:
        self.summary.dirs += 1
        skip = (st.st_dev, st.st_ino) in self._skip
        other_fs = self.options.one_file_system and st.st_dev != self._root_dev(dir_fd)
        children: list[Node | dict[str, Any]] = []
        previous: tuple[bytes, bytes] | None = None
        sub_fd = open_dir(dir_fd, name)
        try:
            node.xattrs = old.xattrs if same_meta and old else read_xattrs_of(sub_fd)
            if not skip and not other_fs:
                old_tree = old.subtree if old is not None and old.type == DIR else None
                old_wires, old_blob = self._parent_wires(old_tree)
                if old_tree is not None and old_blob:
                    previous = (old_tree, old_blob)
                excluder = self.excluder
                listing = self._without_excluded(sub_fd, path, list_dir(sub_fd))
                for child_name, child_st in listing:
                    child_path = path + b"/" + child_name
                    wire = old_wires.get(child_name)
                    if (
                        wire is not None
                        and _wire_matches_stat(wire, child_st, self._devs.get(child_st.st_dev))
                        and not (excluder and excluder.excluded(child_path, child_name))
                        and child_path not in self.options.omit
                    ):
                        children.append(wire)  # unchanged: passed through as it was
                        self._count_unchanged(wire, child_path)
                        continue
                    child = self._entry(
                        sub_fd,
                        child_name,
                        child_st,
                        child_path,
                        self._old_node(wire, child_path),
                    )
                    if child is not None:
                        children.append(child)
        finally:
            self._forget_dir_fd(sub_fd)
            os.close(sub_fd)
        self._finish_dir(node, children, previous, path)

    def _dir_changed(
        self, dir_fd: int, name: bytes, path: bytes, node: Node, old: Node, trie: ChangeTrie
    ) -> None:
        """A directory on the way to changed paths: the parent's entries, with
        each changed name looked at again (see the module docstring)."""
        self.summary.dirs += 1
        same_meta = old.ctime_ns == node.ctime_ns
        sub_fd = open_dir(dir_fd, name)
        try:
            node.xattrs = old.xattrs if same_meta else read_xattrs_of(sub_fd)
            old_wires, old_blob = self._parent_wires(old.subtree)
            previous = (old.subtree, old_blob) if old.subtree is not None and old_blob else None
            children: dict[bytes, Node | dict[str, Any]] = dict(old_wires)
            for child_name in sorted(trie):
                child_path = path + b"/" + child_name
                children.pop(child_name, None)
                try:
                    st = os.stat(child_name, dir_fd=sub_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted or renamed away
                if self.excluder and self.excluder.excluded(child_path, child_name):
                    continue
                prev = self._old_node(old_wires.get(child_name), child_path)
                sub = trie[child_name]
                if (
                    sub is not None
                    and prev is not None
                    and prev.type == DIR
                    and stat.S_ISDIR(st.st_mode)
                ):
                    child = self._node(child_name, st)
                    assert child is not None
                    self._dir_changed(sub_fd, child_name, child_path, child, prev, sub)
                else:
                    child = self._entry(sub_fd, child_name, st, child_path, prev)
                if child is not None:
                    children[child_name] = child
            for wire_name, wire in children.items():
                if isinstance(wire, dict) and wire.get("t") != DIR:
                    self._count_unchanged(wire, path + b"/" + wire_name)
        finally:
            self._forget_dir_fd(sub_fd)
            os.close(sub_fd)
        ordered = [children[k] for k in sorted(children)]
        self._finish_dir(node, ordered, previous, path)

    def _without_excluded(
        self, dir_fd: int, path: bytes, listing: list[tuple[bytes, os.stat_result]]
    ) -> list[tuple[bytes, os.stat_result]]:
        """A folder's entries less those --exclude-if-present, --exclude-caches and
        --exclude-larger-than leave out (restic's rules: a folder holding a marker
        keeps the marker alone)."""
        options = self.options
        if options.exclude_if_present:
            names = {name for name, _ in listing}
            for marker, header in options.exclude_if_present:
                if marker in names and _has_header(dir_fd, marker, header):
                    self.summary.excluded_dirs += 1
                    return [(n, st) for n, st in listing if n == marker]
        limit = options.exclude_larger_than
        if limit is not None:
            listing = [
                (n, st)
                for n, st in listing
                if not (stat.S_ISREG(st.st_mode) and st.st_size > limit)
            ]
        return listing

    def _node(self, name: bytes, st: os.stat_result) -> Node | None:
        """`node_from_stat`, with a snapshot's device number recorded as the tree's."""
        node = node_from_stat(name, st)
        if node is not None and st.st_dev in self._devs:
            node.device = self._devs[st.st_dev]
        return node

    def _root_dev(self, dir_fd: int) -> int:
        return os.fstat(dir_fd).st_dev

    def _parent_wires(self, tree_id: bytes | None) -> tuple[dict[bytes, dict[str, Any]], bytes]:
        """The parent point's version of a directory as raw node maps by name, and
        its bytes (nodes are built only for entries that changed)."""
        if tree_id is None:
            return {}, b""
        try:
            blob = self.repo.load_chunk(tree_id, BlobType.TREE)
            wires = decode_wires(blob)
        except StrongroomError as err:
            self._warn(f"parent tree unreadable, reading everything: {err}")
            return {}, b""
        return {w["n"]: w for w in wires}, blob

    def _old_node(self, wire: dict[str, Any] | None, path: bytes) -> Node | None:
        if wire is None:
            return None
        try:
            return Node.from_wire(wire)
        except StrongroomError as err:
            self._warn(f"{os.fsdecode(path)}: parent entry unreadable, reading it: {err}")
            return None

    def _count_unchanged(self, wire: dict[str, Any], path: bytes = b"") -> None:
        if wire["t"] == FILE:
            size = wire.get("sz", 0)
            if self.options.file_report is not None:
                self.options.file_report("unchanged", path, [])
            self.summary.total_files += 1
            self.summary.files_unmodified += 1
            self.summary.total_bytes += size
            self.progress.files_done += 1
            self.progress.bytes_done += size
            self._emit()
        else:
            self.summary.other_entries += 1

    def _finish_dir(
        self,
        node: Node,
        children: list[Node] | list[Node | dict[str, Any]],
        previous: tuple[bytes, bytes] | None = None,
        path: bytes = b"",
    ) -> None:
        """Store the directory at `path` once its files are done. `previous` is the
        parent point's (tree id, tree bytes): an unchanged directory encodes to the
        same bytes, so it needs no hashing and no index lookup."""

        def store() -> None:
            node.subtree = self._store_wires(self._wires(path, children), previous)

        self._then(store)

    def _wires(
        self, path: bytes, children: list[Node] | list[Node | dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The children of the directory at `path` as node maps, classified
        against the seeds (or, without seeds, with any parent's `sd` dropped)."""
        matcher = self.matcher
        wires = []
        for c in children:
            if isinstance(c, dict):
                if matcher is not None:
                    c = matcher.classify_wire(path, c)
                elif ORIGIN_KEY in c:
                    c = {k: v for k, v in c.items() if k != ORIGIN_KEY}
                wires.append(c)
            elif id(c) not in self._dropped:
                if matcher is not None:
                    matcher.classify_node(path, c)
                wires.append(c.to_wire())
        return wires

    def _seed_record(self, matcher: SeedMatcher) -> PointSeeds:
        """The point's `seeds` record; the lacks list is stored as a TREE chunk
        (before the final flush, so it is in a pack when the point names it)."""
        lacks = matcher.lacks()
        lacks_id = None
        if lacks:
            blob = encode_lacks(lacks)
            cid = self.repo.chunk_id(blob) if self.options.dry_run else None
            lacks_id = (cid or self.repo.put_chunk(BlobType.TREE, blob)).hex()
        return matcher.record(lacks_id, len(lacks))

    def _store_wires(
        self, wires: list[dict[str, Any]], previous: tuple[bytes, bytes] | None = None
    ) -> bytes:
        blob = encode_wires(wires)
        if previous is not None and previous[1] == blob:
            return previous[0]
        if self.options.dry_run:
            return self.repo.chunk_id(blob)
        return self.repo.put_chunk(BlobType.TREE, blob)

    # --- files ---------------------------------------------------------------

    def _file(
        self, dir_fd: int, name: bytes, path: bytes, node: Node, old: Node | None, existed: bool
    ) -> None:
        """Reuse an unchanged file's chunks, or read it: small files whole on a worker,
        large ones cut here and hashed/sealed on workers. `old` is given only if its
        ctime matches (so its metadata is current)."""
        self.summary.total_bytes += node.size
        if (
            old is not None
            and (old.size, old.mtime_ns, old.inode) == (node.size, node.mtime_ns, node.inode)
            and len(old.chunks) == len(old.chunk_sizes)
        ):
            # Trusting the parent point: its chunks exist for as long as it does.
            node.chunks, node.chunk_sizes, node.xattrs = old.chunks, old.chunk_sizes, old.xattrs
            self.summary.files_unmodified += 1
            self.progress.bytes_done += node.size
            if self.options.file_report is not None:
                self.options.file_report("unchanged", path, [])
            self._emit()
            return
        if existed:
            self.summary.files_changed += 1
        else:
            self.summary.files_new += 1
        self.progress.current = path.decode("utf-8", "replace")
        if self.options.file_report is not None:
            status, reasons = _why_read(old, node, existed)
            self.options.file_report(status, path, reasons)
        if node.nlink > 1:
            first = self._hardlinks.get((node.device, node.inode))
            if first is not None:
                self._follow_link(first, node)
                return
            self._hardlinks[(node.device, node.inode)] = node
        if self.matcher is not None and self._from_seed(dir_fd, name, path, node):
            return
        if node.size <= self.small_file:
            self._batch_file(dir_fd, name, path, node)
            return
        fd = open_file(dir_fd, name)
        with open(fd, "rb", buffering=0, closefd=True) as stream:
            node.xattrs = read_xattrs_of(fd)
            size = 0
            for view in self.chunker.chunks(stream):
                size += len(view)
                self._submit_chunk(node, view)
            after = os.fstat(fd)
        self._file_read(path, node, size, after)

    def _from_seed(self, dir_fd: int, name: bytes, path: bytes, node: Node) -> bool:
        """--trust-seed-metadata: take a seed file's chunk list for `node` without
        opening the file (xattrs are read by path, which opens nothing). False
        when no seed file matches by path, size, mode and mtime, or when one
        of its chunks is not in the repository (then the file is read)."""
        assert self.matcher is not None
        entry = self.matcher.trusted(path, node)
        if entry is None:
            return False
        chunks = [entry.content[i : i + ID_SIZE] for i in range(0, len(entry.content), ID_SIZE)]
        if not all(self.repo.has_chunk(c) for c in chunks):
            return False
        node.xattrs = read_xattrs(dir_fd, name)
        node.chunks, node.chunk_sizes = chunks, entry.chunk_sizes()
        self.summary.files_from_seed += 1
        self.progress.bytes_done += node.size
        self._emit()
        return True

    def _follow_link(self, first: Node, node: Node) -> None:
        """Another name of a file read in this run: share the first name's (possibly
        still filling) chunk lists; copy its xattrs, and its fate, once it is done."""
        node.chunks, node.chunk_sizes = first.chunks, first.chunk_sizes

        def settle() -> None:
            node.xattrs = first.xattrs
            node.size = first.size
            if id(first) in self._dropped:
                self._dropped.add(id(node))

        self._then(settle)

    def _file_read(self, path: bytes, node: Node, size: int, after: os.stat_result) -> None:
        """Account for a file just read; warn if it changed since the walk saw it
        (`node` still holds the walk's stat, `after` is fstat after reading)."""
        changed = path not in self._copied and (
            node.size,
            node.mtime_ns,
            node.ctime_ns,
            node.inode,
        ) != (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino)
        self.summary.total_bytes += size - node.size
        self.summary.bytes_read += size
        node.size = size
        if changed or size != after.st_size:
            self._warn(f"{os.fsdecode(path)}: file changed while it was read")

    # Small files travel in batches (pipeline/small_files.py): one worker job
    # reads, hashes and seals many of them, which keeps the walking thread free
    # and the per-job cost low.

    def _batch_file(self, dir_fd: int, name: bytes, path: bytes, node: Node) -> None:
        if self._batch.add(dir_fd, name, path, node):
            self._flush_batch()

    def _forget_dir_fd(self, dir_fd: int) -> None:
        """`dir_fd` is about to close; its number may be reused for another directory."""
        self._batch.forget_dir_fd(dir_fd)

    def _then(self, callback: Callable[[], None]) -> None:
        """Run `callback` after all work queued so far, including batched files."""
        if self._batch.items:
            self._batch.after.append(callback)
        else:
            self._work.then(callback)

    def _workers(self, work: int) -> WorkerPool | None:
        """The worker processes for `work` more bytes of work, started once enough
        has been queued (None: do it in this process). Before forking, this
        process's own queue is drained: no sealing thread is mid-job then."""
        if self._pool is not None:
            return self._pool
        if self._jobs <= 1:
            return None
        self._credit += work
        if self._credit < self._start_after:
            return None
        from strongroom.pipeline.workers import WorkerPool

        self._work.finish()
        self._pool = WorkerPool(self.repo, self._jobs, self.small_file, self.options.dry_run)
        self._pool.start()
        return self._pool

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, SmallFileBatch()
        if batch.items:
            pool = self._workers(batch.total + _FILE_COST * len(batch.items))
            if pool is None:
                job = batch.reader(self.repo, self.small_file, self.options.dry_run)
                self._work.submit(job, self._batch_sink(batch))
            else:
                try:
                    fut = pool.read_batch([(fd, name) for fd, name, _, _ in batch.items])
                finally:
                    for dup in batch.dups:  # the worker has its own copies now
                        os.close(dup)
                self._work.submit_future(fut, self._batch_sink(batch))
        for callback in batch.after:
            self._work.then(callback)

    def _batch_sink(self, batch: SmallFileBatch) -> Callable[[list[SmallFile | OSError]], None]:
        def sink(results: list[SmallFile | OSError]) -> None:
            for (_, _, path, node), result in zip(batch.items, results, strict=True):
                if isinstance(result, OSError):
                    if isinstance(result, FileNotFoundError):
                        self._dropped.add(id(node))  # deleted since listed: never there
                        continue
                    self._dropped.add(id(node))
                    self._unreadable(path, result)
                    continue
                node.xattrs = result.xattrs
                for cid, length, sealed in result.chunks:
                    self._sink_chunk(node, cid, length, sealed)
                self._file_read(path, node, result.size, result.after)

        return sink

    def _submit_chunk(self, node: Node, view: memoryview) -> None:
        """Seal one chunk of a large file on a worker; `view` is valid only
        until this returns (the chunker's buffer)."""
        if not view:
            return
        repo = self.repo
        dry = self.options.dry_run

        def sink(result: tuple[bytes, int, Sealed | None]) -> None:
            self._sink_chunk(node, *result)

        pool = self._workers(len(view))
        if pool is not None:
            self._work.submit_future(pool.seal(view), sink)
            return
        data = bytes(view)

        def job() -> tuple[bytes, int, Sealed | None]:
            cid, sealed = repo.seal_new(data, dry_run=dry)
            return cid, len(data), sealed

        self._work.submit(job, sink)

    def _sink_chunk(self, node: Node, cid: bytes, length: int, sealed: Sealed | None) -> None:
        repo = self.repo
        node.chunks.append(cid)
        node.chunk_sizes.append(length)
        if sealed is not None:
            if repo.add_sealed(cid, BlobType.DATA, sealed, length):
                self.progress.bytes_added += length
        elif not self.options.dry_run:
            # "Known" (no sealed bytes), possibly answered by a worker process from
            # its copy of the index: asking here records the pack relied on in this
            # process (docs/design.md §4.4, §8.5).
            repo.has_chunk(cid)
        elif self.options.dry_run and not repo.has_chunk(cid) and cid not in self._dry_seen:
            self._dry_seen[cid] = length
            repo.stats.chunks_added += 1
            repo.stats.bytes_added_raw += length
            self.progress.bytes_added += length
        self.progress.bytes_done += length
        self._emit()

    # --- reporting -----------------------------------------------------------

    def _warn(self, message: str) -> None:
        self.summary.warnings.append(message)
        self.progress.errors += 1

    def _unreadable(self, path: bytes, err: OSError) -> None:
        self.summary.unreadable += 1
        self._warn(f"{os.fsdecode(path)}: cannot read: {err.strerror or err}")

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= _PROGRESS_INTERVAL:
            self._last_report = now
            self.report(self.progress)

    def _scan_totals(self, paths: list[bytes]) -> None:
        """Count files and bytes ahead of the backup, for an ETA (best effort)."""
        files = total = 0
        stack = list(paths)
        while stack and not self.cancel.is_set():
            path = stack.pop()
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    with os.scandir(path) as it:
                        for entry in it:
                            if self.excluder and self.excluder.excluded(
                                os.fsencode(entry.path), os.fsencode(entry.name)
                            ):
                                continue
                            stack.append(os.fsencode(entry.path))
                except OSError:
                    continue
            elif stat.S_ISREG(st.st_mode):
                files += 1
                total += st.st_size
        self.progress.files_total = files
        self.progress.bytes_total = total


def _why_read(old: Node | None, node: Node, existed: bool) -> tuple[str, list[str]]:
    """Why a file is read: new, or changed and by what (the parent's entry is
    given only when its ctime matched, so without one the ctime changed)."""
    if not existed:
        return "new", []
    if old is None:
        return "changed", ["ctime"]
    reasons = [
        what
        for what, a, b in (
            ("size", old.size, node.size),
            ("mtime", old.mtime_ns, node.mtime_ns),
            ("inode", old.inode, node.inode),
        )
        if a != b
    ]
    return "changed", reasons or ["chunk list"]


CACHEDIR_TAG = (b"CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55")


def _has_header(dir_fd: int, name: bytes, header: bytes | None) -> bool:
    """Whether the marker `name` (a regular file) starts with `header` (None: any)."""
    if header is None:
        return True
    try:
        fd = open_file(dir_fd, name)
    except OSError:
        return False
    try:
        return os.read(fd, len(header)) == header
    except OSError:
        return False
    finally:
        os.close(fd)
