"""Looking inside points without restoring: ls, diff, dump.

Which reader a point needs is decided here, by its kind: a file point's tree,
the file system inside a block point, a refusal for a VM point or for a kind
this version does not know (never walked as a file tree)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from strongroom.errors import IntegrityError, PathNotFound, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.model.scope import Scope, ScopeSpec
from strongroom.model.tree import DIR, FILE, MAX_TREE_DEPTH, Node
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore
from strongroom.services.image_files import open_image_filesystem
from strongroom.services.points import require_files
from strongroom.services.scope import (
    BoundScope,
    bind_point,
    iter_scoped,
    refuse_on_image,
    scoped_listing,
    scoped_node,
)
from strongroom.services.walk import find_node, iter_tree, load_tree
from strongroom.sources.image_files import ImageEntry, ImageFileSystem


@dataclass(frozen=True)
class ImageListing:
    """Entries of the file system inside a block point (`filesystem` e.g. "ext4")."""

    filesystem: str
    entries: Iterator[ImageEntry]


FileListing = Iterator[tuple[bytes, Node]]


@contextmanager
def list_point(
    repo: ChunkStore,
    point: RecoveryPoint,
    path: str = "/",
    recursive: bool = True,
    partition: int | None = None,
    scope: BoundScope | None = None,
) -> Iterator[FileListing | ImageListing]:
    """What `ls` shows of `point` under `path`; an image's file system stays
    open until the block ends. With a scope other than `full` (bound to this
    point by `scope_for`), exactly what `restore --scope` writes there."""
    if scope is not None and not scope.scope.is_full:
        require_files(point)
        yield scoped_listing(repo, bytes.fromhex(point.tree), scope.scope, path, recursive)
        return
    _refuse_vm(point)
    if point.kind == PointKind.BLOCK:
        with open_image_filesystem(repo, point, partition) as fs:
            yield ImageListing(fs.kind, _image_entries(fs, path, recursive))
        return
    require_files(point)
    yield list_entries(repo, bytes.fromhex(point.tree), path, recursive)


def scope_for(
    point: RecoveryPoint, spec: ScopeSpec, command: str, *, strict: bool = True
) -> BoundScope:
    """`spec` bound to `point` for `command` (ls, diff, dump): refused on image
    and VM points, UsageError for a seed the point does not build on."""
    refuse_on_image(point, spec, command)
    return bind_point(point, spec, strict=strict)


def _image_entries(fs: ImageFileSystem, path: str, recursive: bool) -> Iterator[ImageEntry]:
    top = fs.stat(path)
    if top.type != "dir":
        yield top
    elif recursive:
        yield from (e for e in fs.walk(path) if e.path != top.path)
    else:
        yield from fs.list(path)


def dump_point(
    repo: ChunkStore,
    point: RecoveryPoint,
    path: str,
    out: BinaryIO,
    partition: int | None = None,
    scope: BoundScope | None = None,
) -> None:
    """Write one file of `point` (or of the file system inside a block point) to
    `out`; with a scope, only a file that `restore --scope` writes."""
    if scope is not None and not scope.scope.is_full:
        require_files(point)
        node = scoped_node(repo, bytes.fromhex(point.tree), scope.scope, path)
        if node.type != FILE:
            raise PathNotFound(f"{printable(path)}: not a regular file in the point")
    _refuse_vm(point)
    if point.kind == PointKind.BLOCK:
        with open_image_filesystem(repo, point, partition) as fs, fs.open(path) as f:
            shutil.copyfileobj(f, out, 1 << 20)
        return
    require_files(point)
    dump_file(repo, bytes.fromhex(point.tree), path, out)


def _refuse_vm(point: RecoveryPoint) -> None:
    if point.kind == PointKind.VM:
        raise UsageError(
            f"point {point.short_id} is a VM point: restore a disk "
            "('restore --disk NAME') or serve it, then browse that image"
        )


def list_entries(
    repo: ChunkStore, tree_id: bytes, path: str = "/", recursive: bool = True
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


def _meta_changed(o: Node, n: Node, folder_times: bool) -> bool:
    """Metadata differs; a folder whose only difference is its modification time
    (it changes whenever an entry is added or removed) counts only with
    `folder_times`, as restic shows such changes only with `--metadata`."""
    if _meta(o) == _meta(n):
        return False
    if folder_times or n.type != DIR or o.type != DIR:
        return True
    return _meta(o)[:3] + _meta(o)[4:] != _meta(n)[:3] + _meta(n)[4:]


def diff_trees(
    repo: ChunkStore,
    a: bytes | None,
    b: bytes | None,
    base: bytes = b"",
    folder_times: bool = True,
) -> Iterator[Change]:
    """Differences from tree `a` to tree `b`; identical subtrees are skipped by id.
    Without `folder_times`, a folder whose only change is its own modification
    time is not reported (its entries' changes are).

    Walked with an explicit stack, by name at every level. A pair of trees met
    again on its own path (a tree containing itself) or nesting deeper than
    MAX_TREE_DEPTH raises IntegrityError instead of looping."""
    on_path: set[tuple[bytes | None, bytes | None]] = set()
    stack: list[tuple[tuple[bytes | None, bytes | None], Iterator[Change | _Pair]]] = []

    def push(pair: _Pair) -> None:
        key = (pair.a, pair.b)
        if key in on_path:
            tid = (pair.a or pair.b or b"").hex()[:16]
            raise IntegrityError(f"tree {tid} is damaged: it contains itself")
        if len(stack) >= MAX_TREE_DEPTH:
            raise IntegrityError(f"a tree is nested deeper than {MAX_TREE_DEPTH} levels")
        on_path.add(key)
        stack.append((key, _diff_level(repo, pair, folder_times)))

    if a != b:
        push(_Pair(a, b, base))
    while stack:
        key, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            on_path.discard(key)
        elif isinstance(item, _Pair):
            if item.a != item.b:
                push(item)
        else:
            yield item


@dataclass(frozen=True)
class _Pair:
    """Two versions of one directory's tree, still to be compared."""

    a: bytes | None
    b: bytes | None
    base: bytes


def _diff_level(repo: ChunkStore, pair: _Pair, folder_times: bool) -> Iterator[Change | _Pair]:
    """One directory's changes, each directory's own pair right after its change."""
    old = {n.name: n for n in load_tree(repo, pair.a)} if pair.a else {}
    new = {n.name: n for n in load_tree(repo, pair.b)} if pair.b else {}
    for name in sorted(old.keys() | new.keys()):
        path = pair.base + b"/" + name
        o, n = old.get(name), new.get(name)
        if o is None and n is not None:
            yield Change("+", path, n)
            if n.type == DIR:
                yield _Pair(None, n.subtree, path)
        elif n is None and o is not None:
            yield Change("-", path, o)
            if o.type == DIR:
                yield _Pair(o.subtree, None, path)
        elif o is not None and n is not None:
            if o.type != n.type:
                yield Change("T", path, n)
                yield _Pair(
                    o.subtree if o.type == DIR else None,
                    n.subtree if n.type == DIR else None,
                    path,
                )
            elif n.type == FILE and o.chunks != n.chunks:
                yield Change("M", path, n)
            elif n.type == DIR:
                if _meta_changed(o, n, folder_times):
                    yield Change("U", path, n)
                yield _Pair(o.subtree, n.subtree, path)
            elif _meta(o) != _meta(n):
                yield Change("U", path, n)


def diff_scoped(
    repo: ChunkStore,
    a: RecoveryPoint,
    sa: Scope,
    b: RecoveryPoint,
    sb: Scope,
    folder_times: bool = True,
) -> Iterator[Change]:
    """Differences between what `restore --scope` writes of `a` and of `b`:
    both scoped walks merged by path (depth first by name on both sides, so
    comparing component lists keeps them in step). An entry that only enters
    or leaves the scope (its class changed) is added or removed."""
    left = iter_scoped(repo, bytes.fromhex(a.tree), sa)
    right = iter_scoped(repo, bytes.fromhex(b.tree), sb)
    old, new = next(left, None), next(right, None)
    while old is not None or new is not None:
        ko = old[0].split(b"/") if old is not None else None
        kn = new[0].split(b"/") if new is not None else None
        if kn is None or (ko is not None and ko < kn):
            assert old is not None
            yield Change("-", old[0], old[1])
            old = next(left, None)
        elif ko is None or kn < ko:
            assert new is not None
            yield Change("+", new[0], new[1])
            new = next(right, None)
        else:
            assert old is not None and new is not None
            o, n = old[1], new[1]
            if o.type != n.type:
                yield Change("T", new[0], n)
            elif n.type == FILE and o.chunks != n.chunks:
                yield Change("M", new[0], n)
            elif _meta_changed(o, n, folder_times):
                yield Change("U", new[0], n)
            old, new = next(left, None), next(right, None)


def dump_file(repo: ChunkStore, tree_id: bytes, path: str, out: BinaryIO) -> int:
    """Write one file's content to `out`, streaming chunk by chunk; returns bytes written."""
    _, node = find_node(repo, tree_id, path)
    if node is None or node.type != FILE:
        raise PathNotFound(f"{printable(path)}: not a regular file in the point")
    written = 0
    for cid, size in zip(node.chunks, node.chunk_sizes, strict=True):
        data = repo.load_chunk(cid, BlobType.DATA, size)
        if len(data) != size:
            raise IntegrityError(
                f"{printable(path)}: chunk {cid.hex()[:16]} has {len(data)} bytes, expected {size}"
            )
        out.write(data)
        written += len(data)
    return written
