"""Seeds from archives: tar members become a file tree, chunked like a backup.

The promise is exact deduplication: a machine's file backed up later must cut
into the very chunks its seed copy did. So content is cut by the rules of the
file backup (pipeline/backup.py with pipeline/small_files.py): a file of at
most `cdc_min` bytes is one chunk (an empty one none), a larger one goes
through `CdcChunker(cdc_min, cdc_avg, cdc_max, chunker_seed)` as a stream.
Hashing and sealing run on the worker pool in order (`OrderedWork`), reading
the archive stays on the calling thread, one member at a time.

The tree is built in memory as entries (metadata and chunk lists, never
content) because an archive's members come in any order and a later member
may replace an earlier one: tar semantics, a later member of the same path
wins; a directory member over a directory sets its metadata and keeps what is
below. Directories that members imply but the archive lacks are created
(mode 0755, owner 0, time 0). Several archives (the data of several .deb
packages) merge into one tree; a path given by two of them is taken from the
later, and counted and reported as a warning. Hard links share their
target's chunk lists and get a synthetic inode number (device 0), so a full
restore links them again. Trees are stored bottom-up once all content is in.

On any error the caller's `with` block abandons the session (`repo.abandon`):
chunks stored meanwhile are unreferenced data that prune removes; nothing
names them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from strongroom.chunking import CdcChunker
from strongroom.errors import Interrupted, SourceError
from strongroom.model.names import printable
from strongroom.model.tree import DIR, FILE, Node, encode_tree
from strongroom.pipeline.ordered import OrderedWork
from strongroom.pipeline.small_files import BATCH_BYTES, BATCH_FILES, Sealed
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.sources.tar_stream import Member
from strongroom.types import Progress, ProgressCallback, no_progress

_PROGRESS_INTERVAL = 0.2
_MAX_WARNINGS = 100  # kept as text; all are counted


@dataclass
class _Entry:
    """A tree entry being built: its node, the source that gave it, and for a
    directory its children by name (None for everything else)."""

    node: Node
    source: str
    children: dict[bytes, _Entry] | None = None


@dataclass
class ArchiveResult:
    """What was stored: the root tree's id and the seed's summary."""

    tree: str
    summary: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def _implied(name: bytes) -> Node:
    return Node(name=name, type=DIR, mode=0o755)


class ArchiveTree:
    """One seed's tree from archive members. Use as a context manager: `add`
    each source's members, then `finish` (which flushes the repository)."""

    def __init__(
        self,
        repo: Repository,
        progress: ProgressCallback = no_progress,
        cancel: threading.Event | None = None,
        workers: int = 2,
    ) -> None:
        self.repo = repo
        cfg = repo.config
        self.chunker = CdcChunker(cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max, repo.master.chunker_seed)
        self.small_file = cfg.cdc_min
        self.report = progress
        self.cancel = cancel or threading.Event()
        self.progress = Progress(job="seed add")
        self.root = _Entry(_implied(b""), "", {})
        self.warnings: list[str] = []
        self.replaced = 0
        self._work = OrderedWork(workers, depth=2 * workers + 2)
        self._batch: list[tuple[Node, bytes]] = []
        self._batch_bytes = 0
        self._next_inode = 1
        self._last_report = 0.0
        stats = repo.stats  # the repository's session totals: this run's are the growth
        self._stats_before = (stats.chunks_added, stats.bytes_added_raw, stats.bytes_added_stored)

    def __enter__(self) -> ArchiveTree:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._work.close(cancel=exc_type is not None)
        if exc_type is not None:
            self.repo.abandon()

    # --- members -------------------------------------------------------------

    def add(self, members: Iterable[Member], source: str) -> None:
        """Place every member of one source (an archive, a package) in the tree."""
        for member in members:
            if self.cancel.is_set():
                raise Interrupted("interrupted")
            self._member(member, source)

    def _member(self, member: Member, source: str) -> None:
        parts = member.path.split(b"/")
        parent = self._directory(parts[:-1], source)
        name = parts[-1]
        children = parent.children
        assert children is not None  # _directory returns directories
        old = children.get(name)
        if member.type == DIR:
            node = self._node(member, name)
            if old is not None and old.children is not None:
                old.node, old.source = node, source  # directories merge
                return
            self._replacing(member.path, old, source)
            children[name] = _Entry(node, source, {})
            return
        if member.hardlink is not None:
            node = self._hard_link(member, name, source)
        else:
            node = self._node(member, name)
            if member.type == FILE:
                self._content(member, node)
        self._replacing(member.path, old, source)
        children[name] = _Entry(node, source)
        self._emit()

    def _directory(self, parts: list[bytes], source: str) -> _Entry:
        """The directory entry at `parts`, creating implied ones on the way (a
        non-directory on the way is replaced by one, with a warning)."""
        entry = self.root
        for i, part in enumerate(parts):
            assert entry.children is not None
            child = entry.children.get(part)
            if child is None or child.children is None:
                if child is not None:
                    path = b"/".join(parts[: i + 1])
                    self._warn(
                        f"{printable(path)}: a {child.node.type!r} entry of {child.source} "
                        f"replaced by a directory of {source}"
                    )
                child = entry.children[part] = _Entry(_implied(part), source, {})
            entry = child
        return entry

    def _replacing(self, path: bytes, old: _Entry | None, source: str) -> None:
        """A later member of the same path wins: silently within one source (tar
        extracts that way), with a warning between sources."""
        if old is not None and old.source != source:
            self._warn(f"{printable(path)}: given by {old.source} and {source}; {source}'s kept")

    def _node(self, member: Member, name: bytes) -> Node:
        return Node(
            name=name,
            type=member.type,
            mode=member.mode,
            uid=member.uid,
            gid=member.gid,
            user=member.user,
            group=member.group,
            mtime_ns=member.mtime_ns,
            atime_ns=member.atime_ns,
            ctime_ns=member.ctime_ns,
            size=member.size,
            rdev=member.rdev,
            link_target=member.link_target,
            xattrs=member.xattrs,
        )

    def _hard_link(self, member: Member, name: bytes, source: str) -> Node:
        """Another name of a member read before: its node, sharing the chunk
        lists (still filling, perhaps) and one synthetic inode number."""
        assert member.hardlink is not None
        target = self._lookup(member.hardlink)
        if target is None or target.children is not None:
            raise SourceError(
                f"{source}: hard link {printable(member.path)} names "
                f"{printable(member.hardlink)}, which is not a file the archive holds "
                "before it; refused"
            )
        first = target.node
        if first.inode == 0:
            first.inode = self._next_inode
            self._next_inode += 1
        self.progress.files_done += 1
        return dataclasses.replace(first, name=name)

    def _lookup(self, path: bytes) -> _Entry | None:
        entry: _Entry | None = self.root
        for part in path.split(b"/"):
            if entry is None or entry.children is None:
                return None
            entry = entry.children.get(part)
        return entry

    # --- content -------------------------------------------------------------

    def _content(self, member: Member, node: Node) -> None:
        """Cut a file's content as the file backup does (see the module docstring)."""
        data = member.data
        assert data is not None
        self.progress.files_done += 1
        self.progress.current = member.path.decode("utf-8", "replace")
        if member.size <= self.small_file:
            content = data.read()
            self._check_size(member, len(content))
            self._batch.append((node, content))
            self._batch_bytes += len(content)
            if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
                self._flush_batch()
            return
        size = 0
        for view in self.chunker.chunks(data):
            size += len(view)
            self._submit_chunk(node, bytes(view))
            if self.cancel.is_set():
                raise Interrupted("interrupted")
        self._check_size(member, size)

    def _check_size(self, member: Member, size: int) -> None:
        if size != member.size:
            raise SourceError(
                f"{printable(member.path)}: the archive gave {size} of its {member.size} bytes"
            )

    def _flush_batch(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not batch:
            return
        repo = self.repo

        def job() -> list[tuple[bytes, int, Sealed | None] | None]:
            out: list[tuple[bytes, int, Sealed | None] | None] = []
            for _, content in batch:
                if not content:
                    out.append(None)
                    continue
                cid, sealed = repo.seal_new(content)
                out.append((cid, len(content), sealed))
            return out

        def sink(results: list[tuple[bytes, int, Sealed | None] | None]) -> None:
            for (node, _), result in zip(batch, results, strict=True):
                if result is not None:
                    self._sink_chunk(node, *result)

        self._work.submit(job, sink)

    def _submit_chunk(self, node: Node, data: bytes) -> None:
        repo = self.repo

        def job() -> tuple[bytes, int, Sealed | None]:
            cid, sealed = repo.seal_new(data)
            return cid, len(data), sealed

        def sink(result: tuple[bytes, int, Sealed | None]) -> None:
            self._sink_chunk(node, *result)

        self._work.submit(job, sink)

    def _sink_chunk(self, node: Node, cid: bytes, length: int, sealed: Sealed | None) -> None:
        node.chunks.append(cid)
        node.chunk_sizes.append(length)
        if sealed is not None and self.repo.add_sealed(cid, BlobType.DATA, sealed, length):
            self.progress.bytes_added += length
        self.progress.bytes_done += length
        self._emit()

    # --- trees ---------------------------------------------------------------

    def finish(self) -> ArchiveResult:
        """Wait for all content, store the trees bottom-up, flush the repository."""
        self._flush_batch()
        self._work.finish()
        self._settle_links()
        counts: Counter[str] = Counter()
        root = self._store(self.root, counts)
        self.repo.flush()
        stats = self.repo.stats
        chunks, raw, stored = self._stats_before
        summary = {
            "files": counts["files"],
            "bytes": counts["bytes"],
            "dirs": counts["dirs"],
            "other": counts["other"],
            "chunks_new": stats.chunks_added - chunks,
            "data_added": stats.bytes_added_raw - raw,
            "data_added_stored": stats.bytes_added_stored - stored,
        }
        if self.replaced:
            summary["replaced"] = self.replaced
        self._emit(force=True)
        return ArchiveResult(root.hex(), summary, self.warnings)

    def _settle_links(self) -> None:
        """Give each hard-linked node the number of its names that remained (a
        later member may have replaced some); a lone name is no link."""
        nodes: list[Node] = []
        stack = [self.root]
        while stack:
            entry = stack.pop()
            for child in (entry.children or {}).values():
                if child.children is not None:
                    stack.append(child)
                elif child.node.inode:
                    nodes.append(child.node)
        links = Counter(node.inode for node in nodes)
        for node in nodes:
            node.nlink = links[node.inode]
            if node.nlink == 1:
                node.inode = 0

    def _store(self, entry: _Entry, counts: Counter[str]) -> bytes:
        """Store the tree of a directory entry (depth is bounded by the
        member names' nesting limit, sources/tar_stream.MAX_DEPTH)."""
        assert entry.children is not None
        nodes = []
        for child in entry.children.values():
            node = child.node
            if child.children is not None:
                node.subtree = self._store(child, counts)
                counts["dirs"] += 1
            elif node.type == FILE:
                counts["files"] += 1
                counts["bytes"] += node.size
            else:
                counts["other"] += 1
            nodes.append(node)
        return self.repo.put_chunk(BlobType.TREE, encode_tree(nodes))

    # --- reporting -----------------------------------------------------------

    def _warn(self, message: str) -> None:
        """A replaced entry: counted in the summary ("replaced") and reported."""
        self.replaced += 1
        self.note(message)

    def note(self, message: str) -> None:
        """A warning for the user (an entry skipped or replaced)."""
        self.progress.errors += 1
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= _PROGRESS_INTERVAL:
            self._last_report = now
            self.report(self.progress)
