"""Crafting hostile file points through the repository's own write API, and
proving that a restore changed nothing outside its target.

Trees are packed here without `encode_tree`, so they may hold what the codec
would never write: unsorted or duplicate names, `..`, `/`, NUL, sizes that do
not add up. `snapshot` records everything a restore could harm (names, types,
modes, owners, times, link counts, contents, symlink targets) of a folder
except one subtree (the target).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgpack

from strongroom.model.point import RecoveryPoint, now
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository


def wire(name: bytes, kind: str = "f", **fields: Any) -> dict[str, Any]:
    """A node map as a tree stores it (keys of docs/format.md); defaults for the rest."""
    doc: dict[str, Any] = {"n": name, "t": kind, "m": 0o644, "u": 0, "g": 0}
    doc.update({"mt": 1_000_000_000, "at": 1_000_000_000, "ct": 1_000_000_000})
    if kind == "f":
        doc.update({"sz": 0, "c": b"", "cs": []})
    doc.update(fields)
    return doc


def file_wire(repo: Repository, name: bytes, content: bytes, **fields: Any) -> dict[str, Any]:
    """A file node whose content is stored as one chunk (or none when empty)."""
    ids = repo.put_chunk(BlobType.DATA, content) if content else b""
    sizes = [len(content)] if content else []
    return wire(name, "f", **{"sz": len(content), "c": ids, "cs": sizes, **fields})


def put_tree(repo: Repository, nodes: list[dict[str, Any]]) -> bytes:
    """Store nodes exactly in the given order (no sorting, no checks); returns the tree id."""
    blob = msgpack.packb({"v": 1, "nodes": nodes}, use_bin_type=True)
    return repo.put_chunk(BlobType.TREE, blob)


def dir_wire(repo: Repository, name: bytes, nodes: list[dict[str, Any]], **fields: Any) -> dict:  # type: ignore[type-arg]
    return wire(name, "d", st=put_tree(repo, nodes), **{"m": 0o755, **fields})


def save_files_point(
    repo: Repository, root: bytes, paths: list[str] | None = None
) -> RecoveryPoint:
    """Commit a files point whose root tree is `root`, the way `backup_files` does."""
    repo.flush()
    point = RecoveryPoint(
        kind="files",
        time=now(),
        host="host",
        user="user",
        paths=paths or ["/"],
        tree=root.hex(),
    )
    point.id = repo.save_point(point.to_doc())
    return point


Snapshot = dict[str, tuple[Any, ...]]


def snapshot(root: Path, target: Path, loose: tuple[str, ...] = ()) -> Snapshot:
    """Every entry under `root` (itself included) but inside `target`: type, mode,
    owner, mtime, ctime, link count, content or link target. Of `target` itself
    only type, mode and owner (its entries change its times). Names starting
    with one of `loose` skip link count and ctime (files the test hard-linked
    into the target, whose replacement there rightly unlinks them)."""
    found: Snapshot = {}

    def record(path: Path) -> None:
        st = os.lstat(path)
        rel = str(path.relative_to(root))
        kind = stat.S_IFMT(st.st_mode)
        if path == target:
            found[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            return
        loosened = path.name.startswith(loose) if loose else False
        detail: Any = None
        if stat.S_ISREG(st.st_mode):
            detail = path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            detail = os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            detail = sorted(os.listdir(path))
        found[rel] = (
            kind,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            None if loosened else st.st_ctime_ns,
            None if loosened else st.st_nlink,
            detail,
            tuple(sorted(os.listxattr(path, follow_symlinks=False))),
        )
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(path.iterdir()):
                record(child)

    record(root)
    return found
