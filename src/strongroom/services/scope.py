"""Scoped recovery (docs/seeds.md, "Scoped recovery"): a scope bound to a point,
the list of seed files a point lacks, and the one scoped walk that `ls` and
`diff` use (restore walks the same way in pipeline/restore.py, asking the same
`Scope`; tests hold the two to the same list).

Everything here reads records from storage: the lacks list is decoded and
checked (`decode_lacks`: paths of valid components only), its seed indexes
must name seeds of the point, and its count must match the point's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from strongroom.atomic import atomic_write
from strongroom.errors import IntegrityError, PathNotFound, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.origin import decode_lacks
from strongroom.model.point import RecoveryPoint
from strongroom.model.scope import Scope, ScopeKind, ScopeSpec, bind, class_of, root_path
from strongroom.model.tree import DIR, Node, TreePath
from strongroom.pipeline.restore import Selection
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkReader
from strongroom.services.walk import find_node, load_tree

# The default --lacks-file, directly in the restore target (see docs/seeds.md).
LACKS_NAME = ".strongroom-lacks"


@dataclass
class BoundScope:
    """A scope for one point, with what a user must be told about it."""

    scope: Scope
    notice: str | None = None  # e.g. "records no seeds: everything is its own"


def refuse_on_image(point: RecoveryPoint, spec: ScopeSpec, command: str) -> None:
    """`ls`/`diff`/`dump` read image and VM points without scopes."""
    if not spec.is_full and point.kind in (PointKind.BLOCK, PointKind.VM):
        raise UsageError(
            f"{command} --scope {spec}: point {point.short_id} is an image point; "
            "scopes of image points are for restore (an overlay on the golden image)"
        )


def bind_point(point: RecoveryPoint, spec: ScopeSpec, *, strict: bool = True) -> BoundScope:
    """`spec` for a file point (UsageError as `model.scope.bind` says)."""
    scope = bind(spec, point.seeds, point.short_id, strict=strict)
    notice = None
    if point.seeds is None and spec.kind is ScopeKind.USER:
        notice = (
            f"point {point.short_id} was not made against seeds: "
            "every entry is the machine's own, --scope user is everything"
        )
    return BoundScope(scope, notice)


# --- the seed files a point lacks --------------------------------------------


def lacking_paths(repo: ChunkReader, point: RecoveryPoint) -> list[bytes]:
    """The absolute paths (as the point names them: its seed root joined with
    each seed path) of the seed files the machine lacks, sorted and unique.

    IntegrityError for a list that does not decode, names a seed the point
    does not build on, or whose length is not the point's `lacks_count`."""
    seeds = point.seeds
    if seeds is None or seeds.lacks is None:
        if seeds is not None and seeds.lacks_count:
            raise IntegrityError(
                f"point {point.short_id} counts {seeds.lacks_count} lacking seed files "
                "but records no list of them"
            )
        return []
    pairs = decode_lacks(repo.load_chunk(bytes.fromhex(seeds.lacks), BlobType.TREE))
    if any(index >= len(seeds.used) for index, _ in pairs):
        raise IntegrityError(
            f"point {point.short_id}: the list of lacking seed files names a seed "
            "the point does not build on"
        )
    if len(pairs) != seeds.lacks_count:
        raise IntegrityError(
            f"point {point.short_id}: the list of lacking seed files holds {len(pairs)} "
            f"entries, the point counts {seeds.lacks_count}"
        )
    root = root_path(seeds)
    return sorted({root + b"/" + path for _, path in pairs})


def escape_line(path: bytes) -> bytes:
    """One path as one line of a lacks file: `\\` as `\\\\`, newline as `\\n`,
    carriage return as `\\r`; every other byte as it is (docs/seeds.md)."""
    return path.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def unescape_line(line: bytes) -> bytes:
    """The inverse of `escape_line` (for tests and scripts that read the file)."""
    out = bytearray()
    i = 0
    while i < len(line):
        c = line[i : i + 1]
        if c == b"\\" and i + 1 < len(line):
            nxt = line[i + 1 : i + 2]
            out += {b"\\": b"\\", b"n": b"\n", b"r": b"\r"}.get(nxt, b"\\" + nxt)
            i += 2
        else:
            out += c
            i += 1
    return bytes(out)


def default_lacks_file(target: str) -> str:
    return os.path.join(target, LACKS_NAME)


def check_lacks_file(repo: ChunkReader, point: RecoveryPoint, target: str, lacks_file: str) -> None:
    """Refuse, before anything is written, a lacks file the restore would also
    write: a name inside the target is a path of the point there (restored
    paths are absolute below the target), so it is taken when the point holds
    that path (the default name: a point holding `/.strongroom-lacks`); and a
    directory cannot be replaced."""
    inside = _point_path_of(target, lacks_file)
    if inside is not None:
        try:
            find_node(repo, bytes.fromhex(point.tree), inside)
        except PathNotFound:
            pass
        else:
            raise UsageError(
                f"point {point.short_id} holds {printable(inside)} itself: name another place "
                "for the list of lacking seed files with --lacks-file"
            )
    if os.path.isdir(lacks_file):
        raise UsageError(f"--lacks-file {printable(lacks_file)} is a directory")
    folder = os.path.dirname(os.path.abspath(lacks_file))
    if folder != os.path.abspath(target) and not os.path.isdir(folder):
        raise UsageError(f"--lacks-file {printable(lacks_file)}: no such folder")


def _point_path_of(target: str, lacks_file: str) -> str | None:
    """The path of the point a restore into `target` writes at `lacks_file`
    (its folder resolved as the restore will find it); None outside the target."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(lacks_file)))
    real = os.path.join(folder, os.path.basename(lacks_file))
    rel = os.path.relpath(real, os.path.realpath(target))
    if rel in (".", "..") or rel.startswith("../"):
        return None
    return "/" + rel


def write_lacks_file(lacks_file: str, paths: list[bytes]) -> None:
    """One path a line (escaped by `escape_line`), replaced atomically: a
    symlink or file in the way is replaced, never followed or written through."""
    body = b"".join(escape_line(p) + b"\n" for p in paths)
    atomic_write(lacks_file, lambda f: f.write(body))


# --- the scoped walk -----------------------------------------------------------


@dataclass
class _Level:
    path: bytes
    node: Node | None  # None for the root
    nodes: Iterator[Node]
    covered: bool
    shown: bool  # yielded already (selected, or something below it was)
    entered: bool = False
    pending: list[tuple[bytes, Node]] = field(default_factory=list)


def iter_scoped(
    repo: ChunkReader, tree_id: bytes, scope: Scope, under: str = "/"
) -> Iterator[tuple[bytes, Node]]:
    """(path, node) of exactly what `restore --scope` (with `--include under`)
    writes, depth first by name, parents first: a selected entry, and each
    directory on the way to one (yielded just before the first entry below it
    that is). IntegrityError for damage, as every walker of trees."""
    if under not in ("", "/"):
        find_node(repo, tree_id, under)  # PathNotFound for a path not in the point
    selection = Selection([under] if under not in ("", "/") else [])
    trees = TreePath()
    trees.enter(tree_id)
    stack = [_Level(b"", None, iter(load_tree(repo, tree_id)), not selection.includes, True)]
    while stack:
        level = stack[-1]
        node = next(level.nodes, None)
        if node is None:
            stack.pop()
            if level.entered:
                trees.leave()
            continue
        path = level.path + b"/" + node.name
        covered = level.covered or selection.covers(path)
        if not covered and not (node.type == DIR and selection.leads_to(path)):
            continue
        selected = covered and scope.selects(node)
        if node.type == DIR:
            if not selected and not scope.enters(path, node):
                continue
        elif not selected:
            continue
        if selected:
            for waiting in stack:
                if not waiting.shown:
                    waiting.shown = True
                    assert waiting.node is not None
                    yield waiting.path, waiting.node
            yield path, node
        if node.type == DIR:
            child = _Level(path, node, iter(()), covered, selected)
            if node.subtree is not None:
                trees.enter(node.subtree)
                child.entered = True
                child.nodes = iter(load_tree(repo, node.subtree))
            stack.append(child)


def scoped_listing(
    repo: ChunkReader, tree_id: bytes, scope: Scope, path: str = "/", recursive: bool = True
) -> Iterator[tuple[bytes, Node]]:
    """What `ls --scope` shows under `path`: the scoped walk, only `path`
    itself and (without `recursive`) its direct entries."""
    base = path.rstrip("/").encode("utf-8", "surrogateescape")
    depth = base.count(b"/") + 1
    for entry_path, node in iter_scoped(repo, tree_id, scope, path):
        if not entry_path.startswith(base + b"/") and entry_path != base:
            continue  # a directory on the way to `path`
        if recursive or entry_path.count(b"/") <= depth:
            yield entry_path, node


def scoped_node(repo: ChunkReader, tree_id: bytes, scope: Scope, path: str) -> Node:
    """The node at `path` if a scoped restore writes it, as `dump --scope` needs;
    PathNotFound (one line) for a path not in the point or outside the scope."""
    parts = [p for p in path.encode("utf-8", "surrogateescape").split(b"/") if p]
    if not parts:
        raise PathNotFound(f"{printable(path)}: not a regular file in the point")
    current = tree_id
    walked = b""
    for i, part in enumerate(parts):
        nodes = {n.name: n for n in load_tree(repo, current)}
        node = nodes.get(part)
        if node is None:
            raise PathNotFound(f"{printable(path)}: no such path in the point")
        walked += b"/" + part
        if i == len(parts) - 1:
            if not scope.selects(node):
                raise PathNotFound(
                    f"{printable(path)}: outside --scope {scope.spec} (it is {_describe(node)})"
                )
            return node
        if node.type != DIR or node.subtree is None:
            raise PathNotFound(f"{printable(path)}: {printable(part)} is not a directory")
        if not scope.enters(walked, node):
            raise PathNotFound(
                f"{printable(path)}: outside --scope {scope.spec} "
                f"({printable(walked)} is {_describe(node)})"
            )
        current = node.subtree
    raise AssertionError("unreachable")  # pragma: no cover


def _describe(node: Node) -> str:
    return class_of(node).word
