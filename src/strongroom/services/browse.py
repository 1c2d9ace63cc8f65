"""Looking inside points without restoring: ls, diff, dump."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from strongroom.errors import PathNotFound
from strongroom.model.tree import DIR, FILE, Node
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.walk import find_node, iter_tree, load_tree


def list_entries(
    repo: Repository, tree_id: bytes, path: str = "/", recursive: bool = True
) -> Iterator[tuple[bytes, Node]]:
    """(path, node) under `path` (the node itself first, unless it is the root)."""
    _, node = find_node(repo, tree_id, path)
    base = path.rstrip("/").encode("utf-8", "surrogateescape")
    if node is None:  # the root
        if recursive:
            yield from iter_tree(repo, tree_id)
        else:
            for child in load_tree(repo, tree_id):
                yield b"/" + child.name, child
        return
    yield base, node
    if node.type == DIR and node.subtree is not None:
        if recursive:
            yield from iter_tree(repo, node.subtree, base)
        else:
            for child in load_tree(repo, node.subtree):
                yield base + b"/" + child.name, child


@dataclass(frozen=True)
class Change:
    kind: str  # "+" added, "-" removed, "M" content changed, "U" metadata only, "T" type changed
    path: bytes
    node: Node


def _meta(n: Node) -> tuple[object, ...]:
    return (
        n.mode,
        n.uid,
        n.gid,
        n.mtime_ns,
        n.link_target,
        tuple(sorted(n.xattrs.items())),
        n.rdev,
    )


def diff_trees(
    repo: Repository, a: bytes | None, b: bytes | None, base: bytes = b""
) -> Iterator[Change]:
    """Differences from tree `a` to tree `b`; identical subtrees are skipped by id."""
    if a == b:
        return
    old = {n.name: n for n in load_tree(repo, a)} if a else {}
    new = {n.name: n for n in load_tree(repo, b)} if b else {}
    for name in sorted(old.keys() | new.keys()):
        path = base + b"/" + name
        o, n = old.get(name), new.get(name)
        if o is None and n is not None:
            yield Change("+", path, n)
            if n.type == DIR:
                yield from diff_trees(repo, None, n.subtree, path)
        elif n is None and o is not None:
            yield Change("-", path, o)
            if o.type == DIR:
                yield from diff_trees(repo, o.subtree, None, path)
        elif o is not None and n is not None:
            if o.type != n.type:
                yield Change("T", path, n)
                yield from diff_trees(
                    repo,
                    o.subtree if o.type == DIR else None,
                    n.subtree if n.type == DIR else None,
                    path,
                )
            elif n.type == FILE and o.chunks != n.chunks:
                yield Change("M", path, n)
            elif n.type == DIR:
                if _meta(o) != _meta(n):
                    yield Change("U", path, n)
                yield from diff_trees(repo, o.subtree, n.subtree, path)
            elif _meta(o) != _meta(n):
                yield Change("U", path, n)


def dump_file(repo: Repository, tree_id: bytes, path: str, out: BinaryIO) -> int:
    """Write one file's content to `out`, streaming chunk by chunk; returns bytes written."""
    _, node = find_node(repo, tree_id, path)
    if node is None or node.type != FILE:
        raise PathNotFound(f"{path}: not a regular file in the point")
    written = 0
    for cid, size in zip(node.chunks, node.chunk_sizes, strict=True):
        data = repo.load_chunk(cid, BlobType.DATA, size)
        out.write(data)
        written += len(data)
    return written
