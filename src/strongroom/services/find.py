"""Finding files across points by name or path pattern, as restic's `find`.

Patterns are the exclude patterns' (sources/exclude.py): one without a slash
matches an entry's name (`*.conf`), one with a slash the whole absolute path
(`/etc/**/*.conf`, `**` crossing slashes). Points share most of their trees,
so a subtree is searched once per (tree id, path) and its matches reused by
every later point that holds it: searching a hundred daily points of a
mostly unchanged tree costs little more than searching one.

With `images`, the ext2/3/4 or FAT file system inside each block image point
is searched too (services/image_files.py: only its metadata blocks are read
from the repository, but for every point anew, so it is asked for rather
than done by default). A point whose disk holds no file system strongroom
reads, or a damaged one, is reported through `on_skip` and the search goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from strongroom.formats.partitions import PartitionTableError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import DIR, Node, TreePath
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.image_files import open_image_filesystem
from strongroom.services.points import PointFilter, find_point, list_points
from strongroom.services.walk import load_tree
from strongroom.sources.exclude import Excluder
from strongroom.sources.image_files import ImageEntry, ImageFileSystemError

Found = list[tuple[bytes, Node]]


@dataclass
class FindRequest:
    patterns: list[str]
    filter: PointFilter = field(default_factory=PointFilter)
    points: list[str] = field(default_factory=list)  # refs; empty: every matching point
    ignore_case: bool = False
    oldest: datetime | None = None  # entries modified at or after
    newest: datetime | None = None  # entries modified at or before
    images: bool = False  # also search the file systems inside block image points


@dataclass
class PointMatches:
    point: RecoveryPoint
    matches: Found
    filesystem: str = ""  # an image point's: "ext4", "fat32", ...; "" for a file point


SkipReport = Callable[[RecoveryPoint, str], None]


@dataclass
class _Frame:
    key: tuple[bytes, bytes]
    nodes: Iterator[Node]
    found: Found = field(default_factory=list)


class _Search:
    def __init__(self, repo: ChunkStore, req: FindRequest) -> None:
        self.repo = repo
        self.req = req
        patterns = [p.lower() for p in req.patterns] if req.ignore_case else req.patterns
        self.matcher = Excluder(patterns)
        self.oldest_ns = None if req.oldest is None else int(req.oldest.timestamp() * 1e9)
        self.newest_ns = None if req.newest is None else int(req.newest.timestamp() * 1e9)
        self.memo: dict[tuple[bytes, bytes], Found] = {}

    def matches(self, path: bytes, node: Node) -> bool:
        name = node.name
        if self.req.ignore_case:
            path, name = path.lower(), name.lower()
        if not self.matcher.excluded(path, name):
            return False
        if self.oldest_ns is not None and node.mtime_ns < self.oldest_ns:
            return False
        return self.newest_ns is None or node.mtime_ns <= self.newest_ns

    def tree(self, tree_id: bytes) -> Found:
        """Every match under the tree, in walk order (parents before children)."""
        root = (tree_id, b"")
        if root in self.memo:
            return self.memo[root]
        guard = TreePath()
        guard.enter(tree_id)
        stack = [_Frame(root, iter(load_tree(self.repo, tree_id)))]
        while True:
            frame = stack[-1]
            node = next(frame.nodes, None)
            if node is None:  # the subtree is done: remember it, hand it up
                stack.pop()
                guard.leave()
                self.memo[frame.key] = frame.found
                if not stack:
                    return frame.found
                stack[-1].found.extend(frame.found)
                continue
            path = frame.key[1] + b"/" + node.name
            if self.matches(path, node):
                frame.found.append((path, node))
            if node.type == DIR and node.subtree is not None:
                key = (node.subtree, path)
                known = self.memo.get(key)
                if known is not None:
                    frame.found.extend(known)
                    continue
                guard.enter(node.subtree)
                stack.append(_Frame(key, iter(load_tree(self.repo, node.subtree))))


def find_files(
    repo: Repository, req: FindRequest, on_skip: SkipReport | None = None
) -> Iterator[PointMatches]:
    """Points with at least one match, oldest first. File points always; block
    image points with `req.images` (the module docstring), else each is handed
    to `on_skip`; a VM point has several disks and is not searched."""
    if req.points:
        points = [find_point(repo, ref, req.filter) for ref in req.points]
    else:
        points = list_points(repo, req.filter)
    return search_points(repo, points, req, on_skip)


def search_points(
    repo: ChunkStore,
    points: list[RecoveryPoint],
    req: FindRequest,
    on_skip: SkipReport | None = None,
) -> Iterator[PointMatches]:
    """`find_files` over the chosen `points` (each once, oldest first): the
    search an agent runs over its own points through the server."""
    points = sorted({p.id: p for p in points}.values(), key=lambda p: (p.time, p.id))
    search = _Search(repo, req)
    for point in points:
        if point.kind == PointKind.BLOCK:
            if not req.images:
                if on_skip is not None:
                    on_skip(point, "an image point (--images searches the file system inside)")
                continue
            found_in_image = _search_image(repo, point, search, on_skip)
            if found_in_image is not None and found_in_image.matches:
                yield found_in_image
            continue
        if point.kind != PointKind.FILES or not point.tree:
            continue
        found = search.tree(bytes.fromhex(point.tree))
        if found:
            yield PointMatches(point, found)


def _search_image(
    repo: ChunkStore, point: RecoveryPoint, search: _Search, on_skip: SkipReport | None
) -> PointMatches | None:
    try:
        with open_image_filesystem(repo, point) as fs:
            found = [
                (path, node)
                for path, node in map(_image_node, fs.walk("/"))
                if path != b"/" and search.matches(path, node)
            ]
            return PointMatches(point, found, fs.kind)
    except (ImageFileSystemError, PartitionTableError) as err:
        if on_skip is not None:
            on_skip(point, str(err))
        return None


def _image_node(entry: ImageEntry) -> tuple[bytes, Node]:
    """An entry of an image's file system as a tree node, for matching and listing."""
    path = entry.path.encode("utf-8", "surrogateescape")
    name = path.rsplit(b"/", 1)[-1]
    node = Node(name=name, type=entry.node_type, mode=entry.mode)
    node.uid, node.gid, node.size = entry.uid, entry.gid, entry.size
    node.mtime_ns = int(entry.mtime * 1e9)
    node.link_target = entry.target.encode("utf-8", "surrogateescape")
    return path, node
