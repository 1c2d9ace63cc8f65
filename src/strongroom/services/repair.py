"""Repair use cases: the index, damaged packs, points with lost chunks (design 5a).

All run under the exclusive lock. The usual order after a loss is
`repair packs` (if `check --read-data` found damaged packs), `repair index`
(if packs are missing or unindexed), then `repair points`.

`repair points` follows restic's `repair snapshots`: a file point that
references lost chunks gets a *repaired* twin without the files whose data is
gone (and with empty directories where a whole directory's tree is gone); the
original stays unless `forget` is asked. The twin's time is the original's plus
one microsecond, so the next backup takes it as its parent and reads the
dropped files afresh instead of reusing their lost chunks. Block and VM points
are refused: a disk with zeros where data was lost looks whole and is not, and
what `check` reports (the lost block offsets) is what a user needs to decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta

from strongroom.errors import StrongroomError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import FILE, Node, decode_tree, encode_tree
from strongroom.repository.format import BlobType
from strongroom.repository.repair import (
    IndexRepair,
    PackSalvage,
    rebuild_index,
    salvage_packs,
)
from strongroom.repository.repo import Repository
from strongroom.services.maintenance import damaged_paths
from strongroom.services.points import find_point, list_points
from strongroom.services.walk import referenced_by_points

Report = Callable[[str], None]
REPAIRED_TAG = "repaired"


def repair_index(
    repo: Repository, *, read_all_packs: bool = False, report: Report = lambda _: None
) -> IndexRepair:
    """Rebuild the index from the packs that exist. Caller holds the exclusive lock."""
    return rebuild_index(repo, read_all_packs=read_all_packs, report=report)


def repair_packs(
    repo: Repository, packs: Iterable[bytes] | None = None, report: Report = lambda _: None
) -> PackSalvage:
    """Salvage damaged packs (all packs are read unless `packs` names some)."""
    return salvage_packs(repo, packs, report)


@dataclass
class PointRepair:
    point: str  # the original's id
    kind: str
    damaged: list[str] = field(default_factory=list)  # paths dropped or emptied
    repaired: str | None = None  # the twin's id
    forgotten: bool = False
    refused: str | None = None  # why a point was left as it is

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_REFUSE_IMAGE = (
    "a {kind} point is not repaired: zeros in place of lost blocks would make a disk "
    "that looks whole and is not; restore what is readable and make a new backup"
)


def repair_points(
    repo: Repository,
    refs: Iterable[str] = (),
    *,
    forget: bool = False,
    dry_run: bool = False,
    report: Report = lambda _: None,
) -> list[PointRepair]:
    """Repair the points named by `refs` (all points if none); return one entry
    per point that references lost data."""
    wanted = list(refs)
    points = [find_point(repo, r) for r in wanted] if wanted else list_points(repo)
    twins = {
        str(p.summary.get("repaired_from")): p.id
        for p in list_points(repo)
        if p.summary.get("repaired_from")
    }
    results: list[PointRepair] = []
    for n, point in enumerate(points, 1):
        report(f"checking point {n}/{len(points)}")
        if point.kind != PointKind.FILES:
            lost = _image_damage(repo, point)
            if lost:
                results.append(
                    PointRepair(
                        point.id, point.kind, lost, refused=_REFUSE_IMAGE.format(kind=point.kind)
                    )
                )
            continue
        walker = _TreeRepair(repo, dry_run)
        new_root = walker.repair(bytes.fromhex(point.tree))
        if not walker.damaged:
            continue
        result = PointRepair(point.id, point.kind, walker.damaged)
        results.append(result)
        if dry_run:
            continue
        if new_root is None:
            result.refused = "its root tree is lost: nothing is left to keep"
        elif point.id in twins:  # repaired by an earlier run: do not write it twice
            result.repaired = twins[point.id]
        else:
            repo.flush()  # new trees before the point that names them
            result.repaired = repo.save_point(_twin(point, new_root, len(walker.damaged)).to_doc())
        if forget and (result.repaired is not None or new_root is None):
            repo.verify_lock()  # a forget beside a repair or prune started in a lapse
            repo.delete_point(point.id)
            result.forgotten = True
    return results


def _twin(point: RecoveryPoint, root: bytes, damaged: int) -> RecoveryPoint:
    summary = {**point.summary, "repaired_from": point.id, "repaired_damaged_paths": damaged}
    return replace(
        point,
        time=point.time + timedelta(microseconds=1),
        tree=root.hex(),
        tags=sorted({*point.tags, REPAIRED_TAG}),
        summary=summary,
        id="",
    )


def _image_damage(repo: Repository, point: RecoveryPoint) -> list[str]:
    """Lost blocks of a block or VM point, named as `check` names them."""
    used, errors = referenced_by_points(repo, [point])
    lost = {c for c in used if not repo.has_chunk(c)}
    if errors:
        return errors
    return damaged_paths(repo, point, lost) if lost else []


class _TreeRepair:
    """Rewrites a point's trees without files whose chunks are lost.

    Iterative (a hostile tree may be deep), each tree visited once; a tree
    whose content is unchanged keeps its id, so only the paths above a loss
    are written again."""

    def __init__(self, repo: Repository, dry_run: bool) -> None:
        self.repo = repo
        self.dry_run = dry_run
        self.damaged: list[str] = []
        self._done: dict[bytes, bytes | None] = {}
        self._empty: bytes | None = None

    def _load(self, tree_id: bytes) -> list[Node | None] | None:
        if not self.repo.has_chunk(tree_id):
            return None
        try:
            return list(decode_tree(self.repo.load_chunk(tree_id, BlobType.TREE)))
        except StrongroomError:
            return None

    def _store(self, nodes: list[Node]) -> bytes:
        blob = encode_tree(nodes)
        if self.dry_run:
            return self.repo.chunk_id(blob)
        return self.repo.put_chunk(BlobType.TREE, blob)

    def _empty_tree(self) -> bytes:
        if self._empty is None:
            self._empty = self._store([])
        return self._empty

    def repair(self, root: bytes) -> bytes | None:
        """The repaired root's id (the same id if nothing was lost), or None if
        the root tree itself is lost."""
        stack: list[_Frame] = [_Frame(root, b"", self._load(root))]
        active = {root}
        while stack:
            frame = stack[-1]
            nodes = frame.nodes
            if nodes is not None and frame.i < len(nodes):
                node = nodes[frame.i]
                assert node is not None
                path = frame.path + b"/" + node.name
                if node.type == FILE:
                    if not all(self.repo.has_chunk(c) for c in node.chunks):
                        nodes[frame.i] = None
                        frame.changed = True
                        self._lost(path)
                elif node.subtree is not None:
                    sub = node.subtree
                    if sub not in self._done and sub not in active:
                        stack.append(_Frame(sub, path, self._load(sub)))
                        active.add(sub)
                        continue
                    new = self._done.get(sub)  # a cycle (hostile) counts as lost
                    if new is None:
                        node.subtree = self._empty_tree()
                        frame.changed = True
                        self._lost(path + b"/")
                    elif new != sub:
                        node.subtree = new
                        frame.changed = True
                frame.i += 1
                continue
            stack.pop()
            active.discard(frame.tree_id)
            if nodes is None:
                self._done[frame.tree_id] = None
            elif frame.changed:
                self._done[frame.tree_id] = self._store([n for n in nodes if n is not None])
            else:
                self._done[frame.tree_id] = frame.tree_id
        result = self._done[root]
        if result is None:
            self._lost(b"/")
        return result

    def _lost(self, path: bytes) -> None:
        self.damaged.append(path.decode("utf-8", "surrogateescape"))


@dataclass
class _Frame:
    tree_id: bytes
    path: bytes
    nodes: list[Node | None] | None
    i: int = 0
    changed: bool = False
