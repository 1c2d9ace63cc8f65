"""`check`'s inspection of manifests: every tree, block map and VM manifest the
points reference, each distinct one read once.

A manifest that authenticates was still written by whoever holds the key, and
a restore trusts it: so check reports what the decoder refuses (names a
restore must refuse, duplicate or unsorted names: model/names.py) and looks
for what it alone cannot see (docs/design.md §6): a tree met again on its own
path (a cycle), nesting deeper than MAX_TREE_DEPTH, node
fields and types outside the documented set, a file whose chunk sizes do not
add up to its size or disagree with the index, chunks of the wrong type or
missing from the index, and for images a map whose segments do not decode to
the blocks the root declares. Findings name the point, the path and the tree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import IntegrityError, StrongroomError
from strongroom.model.blockmap import BlockMap, decode_root, decode_segment
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.origin import decode_lacks
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import (
    DIR,
    FILE,
    MAX_TREE_DEPTH,
    SYMLINK,
    Node,
    decode_tree,
    decode_wires,
)
from strongroom.model.vm import VmManifest
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository

# The node keys docs/format.md §10 defines.
NODE_KEYS = frozenset(
    {"n", "t", "m", "u", "g", "un", "gn", "mt", "at", "ct", "sz", "c", "cs"}
    | {"ino", "dev", "nl", "rd", "lt", "x", "st", "sd"}
)

ChunkInfo = Callable[[bytes], tuple[int, int] | None]  # chunk id -> (raw length, type)
_MAX_FINDINGS_PER_TREE = 5


@dataclass
class ManifestFindings:
    errors: list[str] = field(default_factory=list)
    used: set[bytes] = field(default_factory=set)  # every chunk the points reference
    missing: dict[bytes, str] = field(default_factory=dict)  # chunk id -> first referrer
    trees_read: int = 0


class ManifestChecker:
    """Walks the points' manifests once; `chunk_info` answers from the index."""

    def __init__(self, repo: Repository, chunk_info: ChunkInfo) -> None:
        self.repo = repo
        self.chunk_info = chunk_info
        self.found = ManifestFindings()
        self._done: set[bytes] = set()  # manifests already inspected
        self._seeds = 0  # how many seeds the point being walked builds on (`sd` indexes)

    def check_points(
        self, points: list[RecoveryPoint], labels: dict[str, str] | None = None
    ) -> ManifestFindings:
        """`labels` names roots that are not points (a seed: "seed NAME") in findings."""
        for point in points:
            root = bytes.fromhex(point.tree)
            where = (labels or {}).get(point.id) or f"point {point.short_id}"
            if point.kind == PointKind.BLOCK:
                self._check_map(root, where)
            elif point.kind == PointKind.VM:
                self._check_vm(root, where)
            elif point.kind != PointKind.FILES:
                self._error(f"{where} is of unknown kind {point.kind!r}")
            else:
                self._seeds = len(point.seeds.used) if point.seeds is not None else 0
                self._check_tree_root(root, where)
            if point.seeds is not None and point.seeds.lacks is not None:
                self._check_lacks(bytes.fromhex(point.seeds.lacks), len(point.seeds.used), where)
        if self.found.missing:
            chunk, first = next(iter(self.found.missing.items()))
            self._error(
                f"{len(self.found.missing)} referenced data chunks are missing from the index "
                f"(first: chunk {chunk.hex()[:16]} of {first})"
            )
        return self.found

    # --- helpers -------------------------------------------------------------

    def _error(self, text: str) -> None:
        self.found.errors.append(text)

    def _first_visit(self, manifest_id: bytes, where: str) -> bytes | None:
        """The manifest's bytes the first time it is met; None when it was
        inspected already (each distinct manifest once) or cannot be loaded."""
        if manifest_id in self._done:
            return None
        self._done.add(manifest_id)
        return self._load(manifest_id, where)

    def _load(self, chunk_id: bytes, where: str) -> bytes | None:
        """A manifest chunk's bytes, or None after reporting why not."""
        self.found.used.add(chunk_id)
        info = self.chunk_info(chunk_id)
        if info is None:
            self._error(f"{where}: tree chunk {chunk_id.hex()[:16]} is missing from the index")
            return None
        if info[1] != BlobType.TREE:
            self._error(f"{where}: {chunk_id.hex()[:16]} is indexed as data, not a tree chunk")
            return None
        try:
            return self.repo.load_chunk(chunk_id, BlobType.TREE)
        except StrongroomError as err:
            self._error(f"{where}: {err}")
            return None

    def _data_chunk(self, chunk_id: bytes, where: str) -> int | None:
        """The raw length of a referenced data chunk, or None after reporting."""
        self.found.used.add(chunk_id)
        info = self.chunk_info(chunk_id)
        if info is None:
            self.found.missing.setdefault(chunk_id, where)
            return None
        if info[1] != BlobType.DATA:
            self._error(f"{where}: chunk {chunk_id.hex()[:16]} is indexed as a tree chunk")
            return None
        return info[0]

    def _check_lacks(self, chunk_id: bytes, seeds: int, where: str) -> None:
        """The list of seed files a seeded point lacks (docs/format.md §12b)."""
        blob = self._first_visit(chunk_id, where)
        if blob is None:
            return
        try:
            lacks = decode_lacks(blob)
        except StrongroomError as err:
            self._error(f"{where}: {err}")
            return
        if any(index >= seeds for index, _ in lacks):
            self._error(f"{where}: its list of lacking seed files names a seed it does not use")

    # --- file trees ----------------------------------------------------------

    def _check_tree_root(self, root: bytes, where: str) -> None:
        # Depth-first with an explicit stack: (tree id, path, ids on the path).
        stack: list[tuple[bytes, bytes, frozenset[bytes]]] = [(root, b"", frozenset())]
        while stack:
            tree_id, path, ancestors = stack.pop()
            shown = printable(path) or "/"
            if tree_id in ancestors:
                self._error(f"{where}: tree {tree_id.hex()[:16]} at {shown} contains itself")
                continue
            if len(ancestors) >= MAX_TREE_DEPTH:
                self._error(f"{where}: {shown} is nested deeper than {MAX_TREE_DEPTH}")
                continue
            if tree_id in self._done:
                continue
            self._done.add(tree_id)
            nodes = self._check_tree(tree_id, f"{where}: tree {tree_id.hex()[:16]} at {shown}")
            inner = ancestors | {tree_id}
            for node in nodes:
                if node.type == DIR and node.subtree is not None:
                    stack.append((node.subtree, path + b"/" + node.name, inner))

    def _check_tree(self, tree_id: bytes, where: str) -> list[Node]:
        """Inspect one tree; returns its nodes that are safe to descend into."""
        blob = self._load(tree_id, where)
        if blob is None:
            return []
        self.found.trees_read += 1
        try:
            wires = decode_wires(blob)
            nodes = decode_tree(blob)
        except IntegrityError as err:
            self._error(f"{where}: {err}")
            return []
        # Names (empty, ".", "..", "/" or NUL, duplicates, order) were checked
        # by the decoder, which raised above: what is left is safe to descend.
        problems: list[str] = []
        for wire, node in zip(wires, nodes, strict=True):
            problems += self._node_problems(wire, node, where)
        for problem in problems[:_MAX_FINDINGS_PER_TREE]:
            self._error(f"{where}: {problem}")
        if len(problems) > _MAX_FINDINGS_PER_TREE:
            self._error(f"{where}: {len(problems) - _MAX_FINDINGS_PER_TREE} more findings")
        return nodes

    def _node_problems(self, wire: dict[str, Any], node: Node, where: str) -> list[str]:
        shown = node.name.decode("utf-8", "backslashreplace")
        found = []
        unknown = sorted(printable(str(k)) for k in wire if k not in NODE_KEYS)
        if unknown:
            found.append(f"entry {shown!r} has unknown fields {', '.join(unknown)}")
        if node.subtree is not None and node.type != DIR:
            found.append(f"entry {shown!r} is not a directory but names a subtree")
        if node.type != FILE and node.chunks:
            found.append(f"entry {shown!r} is not a file but names chunks")
        if node.type != SYMLINK and node.link_target:
            found.append(f"entry {shown!r} is not a symlink but has a target")
        if node.origin is not None and (
            max(node.origin.seeds) >= self._seeds
            or len(set(node.origin.seeds)) != len(node.origin.seeds)
        ):
            found.append(
                f"entry {shown!r} names seeds {list(node.origin.seeds)[:8]} of the "
                f"{self._seeds} its point builds on (docs/format.md §12b)"
            )
        if node.type == FILE:
            if sum(node.chunk_sizes) != node.size:
                found.append(
                    f"file {shown!r}: chunk sizes add up to {sum(node.chunk_sizes)}, "
                    f"not its size {node.size}"
                )
            for cid, size in zip(node.chunks, node.chunk_sizes, strict=True):
                raw = self._data_chunk(cid, f"{where}, file {shown!r}")
                if raw is not None and raw != size:
                    found.append(
                        f"file {shown!r}: chunk {cid.hex()[:16]} is {raw} bytes in the index, "
                        f"the tree says {size}"
                    )
        return found

    # --- images --------------------------------------------------------------

    def _check_map(self, root_id: bytes, where: str) -> None:
        where = f"{where}: block map {root_id.hex()[:16]}"
        blob = self._first_visit(root_id, where)
        if blob is None:
            return
        try:
            root = decode_root(blob)
            block_map = BlockMap.empty(root.size, root.block_size)
        except (IntegrityError, ValueError) as err:
            self._error(f"{where}: {err}")
            return
        for i, seg_id in enumerate(root.segments):
            if seg_id is None:
                continue
            seg_blob = self._load(seg_id, f"{where} segment {i}")
            if seg_blob is None:
                continue
            try:
                ids = decode_segment(seg_blob, root.segment_length(i))
            except IntegrityError as err:
                self._error(f"{where} segment {i}: {err}")
                continue
            start = i * root.segment_blocks
            block_map.ids[start : start + len(ids)] = ids
        problems = 0
        for block in range(block_map.blocks):
            cid = block_map.get(block)
            if cid is None:
                continue
            offset, length = block_map.extent(block)
            raw = self._data_chunk(cid, f"{where} block at offset {offset}")
            if raw is not None and raw > length and problems < _MAX_FINDINGS_PER_TREE:
                problems += 1
                self._error(
                    f"{where}: block at offset {offset} holds {raw} bytes, more than its {length}"
                )

    def _check_vm(self, manifest_id: bytes, where: str) -> None:
        where = f"{where}: VM manifest {manifest_id.hex()[:16]}"
        blob = self._first_visit(manifest_id, where)
        if blob is None:
            return
        try:
            manifest = VmManifest.decode(blob)
            roots = [(d.name, bytes.fromhex(d.map_root)) for d in manifest.disks]
        except (ValueError, TypeError, KeyError) as err:
            self._error(f"{where}: {err}")
            return
        for name, root in roots:
            self._check_map(root, f"{where} disk {printable(name)}")
