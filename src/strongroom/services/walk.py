"""Walking a point's manifests: file trees now, block maps when they arrive."""

from __future__ import annotations

from collections.abc import Iterator

from strongroom.errors import PathNotFound
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import DIR, Node, TreePath, decode_tree
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkReader


def load_tree(repo: ChunkReader, tree_id: bytes) -> list[Node]:
    return decode_tree(repo.load_chunk(tree_id, BlobType.TREE))


def iter_tree(repo: ChunkReader, tree_id: bytes, base: bytes = b"") -> Iterator[tuple[bytes, Node]]:
    """Yield (absolute path, node) depth-first, parents before children, by name.

    IntegrityError for a tree nested deeper than MAX_TREE_DEPTH or containing
    itself (`TreePath`): a damaged tree ends the walk, it never loops."""
    trees = TreePath()
    trees.enter(tree_id)
    stack: list[tuple[bytes, Iterator[Node]]] = [(base, iter(load_tree(repo, tree_id)))]
    while stack:
        prefix, nodes = stack[-1]
        node = next(nodes, None)
        if node is None:
            stack.pop()
            trees.leave()
            continue
        path = prefix + b"/" + node.name
        yield path, node
        if node.type == DIR and node.subtree is not None:
            trees.enter(node.subtree)
            stack.append((path, iter(load_tree(repo, node.subtree))))


def find_node(repo: ChunkReader, tree_id: bytes, path: str) -> tuple[bytes, Node | None]:
    """Locate `path` (absolute, as backed up) in a tree; returns (tree containing it, node).

    The root (`/`) has no node: returns (tree_id, None).
    """
    parts = [os_part for os_part in path.encode("utf-8", "surrogateescape").split(b"/") if os_part]
    current_tree = tree_id
    node: Node | None = None
    for i, part in enumerate(parts):
        nodes = {n.name: n for n in load_tree(repo, current_tree)}
        node = nodes.get(part)
        if node is None:
            raise PathNotFound(f"{printable(path)}: no such path in the point")
        if i < len(parts) - 1:
            if node.type != DIR or node.subtree is None:
                raise PathNotFound(f"{printable(path)}: {printable(part)} is not a directory")
            current_tree = node.subtree
    return current_tree, node


def referenced_by_points(
    repo: Repository, points: list[RecoveryPoint]
) -> tuple[set[bytes], list[str]]:
    """Union of chunks the points reference (trees or block maps); errors for unreadable ones.

    Trees shared between points are walked once.
    """
    used: set[bytes] = set()
    errors: list[str] = []
    stack = []
    for point in points:
        root = bytes.fromhex(point.tree)
        if point.seeds is not None and point.seeds.lacks is not None:
            used.add(bytes.fromhex(point.seeds.lacks))  # the seed files it lacks (§12b)
        if point.kind == PointKind.BLOCK:
            # numpy (block maps) loads only when a block point is walked: file
            # backups pass through this module and should not pay for it.
            from strongroom.pipeline.blockmaps import referenced_by_map

            try:
                used |= referenced_by_map(repo, root)
            except Exception as err:
                errors.append(f"block map {root.hex()[:16]}: {err}")
        elif point.kind == PointKind.VM:
            from strongroom.pipeline.blockmaps import referenced_by_vm

            try:
                used |= referenced_by_vm(repo, root)
            except Exception as err:
                errors.append(f"VM manifest {root.hex()[:16]}: {err}")
        elif point.kind != PointKind.FILES:
            # What a kind this version does not know references is unknown too:
            # an error, so that prune keeps everything rather than guess.
            errors.append(f"point {point.short_id} is of unknown kind {point.kind!r}")
        elif root not in used:
            used.add(root)
            stack.append(root)
    while stack:
        tid = stack.pop()
        try:
            nodes = load_tree(repo, tid)
        except Exception as err:
            errors.append(f"tree {tid.hex()[:16]}: {err}")
            continue
        for node in nodes:
            if node.subtree is not None and node.subtree not in used:
                used.add(node.subtree)
                stack.append(node.subtree)
            used.update(node.chunks)
    return used, errors
