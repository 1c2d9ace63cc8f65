"""Finding files across points by name or path pattern, as restic's `find`.

Patterns are the exclude patterns' (sources/exclude.py): one without a slash
matches an entry's name (`*.conf`), one with a slash the whole absolute path
(`/etc/**/*.conf`, `**` crossing slashes). Points share most of their trees,
so a subtree is searched once per (tree id, path) and its matches reused by
every later point that holds it: searching a hundred daily points of a
mostly unchanged tree costs little more than searching one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import DIR, Node, TreePath
from strongroom.repository.repo import Repository
from strongroom.services.points import PointFilter, find_point, list_points
from strongroom.services.walk import load_tree
from strongroom.sources.exclude import Excluder

Found = list[tuple[bytes, Node]]


@dataclass
class FindRequest:
    patterns: list[str]
    filter: PointFilter = field(default_factory=PointFilter)
    points: list[str] = field(default_factory=list)  # refs; empty: every matching point
    ignore_case: bool = False
    oldest: datetime | None = None  # entries modified at or after
    newest: datetime | None = None  # entries modified at or before


@dataclass
class PointMatches:
    point: RecoveryPoint
    matches: Found


@dataclass
class _Frame:
    key: tuple[bytes, bytes]
    nodes: Iterator[Node]
    found: Found = field(default_factory=list)


class _Search:
    def __init__(self, repo: Repository, req: FindRequest) -> None:
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


def find_files(repo: Repository, req: FindRequest) -> Iterator[PointMatches]:
    """Points with at least one match, oldest first (file points only: an image
    or VM point has no file tree here; `ls` reads the files inside an image)."""
    if req.points:
        points = [find_point(repo, ref, req.filter) for ref in req.points]
        points = sorted({p.id: p for p in points}.values(), key=lambda p: (p.time, p.id))
    else:
        points = list_points(repo, req.filter)
    search = _Search(repo, req)
    for point in points:
        if point.kind != PointKind.FILES or not point.tree:
            continue
        found = search.tree(bytes.fromhex(point.tree))
        if found:
            yield PointMatches(point, found)
