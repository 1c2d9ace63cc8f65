"""What a protected directory tree looked like at the last cycle, and what changed since.

The state is one record per path (type, inode, size, times, owner, mode, link
target). A cycle scans the tree, compares every record with the last one and
hands the differences to the translation into file system edits. A file's
content counts as changed when its size, mtime or inode differ (as in file
protection); a change of ctime alone is a metadata change. Directories that
cannot be read keep their last records and produce a warning, so an
unreadable folder never turns into a deletion in the mirror.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace

import msgpack

from strongroom.model.tree import DIR, FILE, SOCKET, SYMLINK
from strongroom.sources.files import node_type


@dataclass(frozen=True)
class Entry:
    """One path's metadata, as the mirror needs it."""

    type: str
    ino: int
    nlink: int
    size: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    mode: int  # permission bits (S_IMODE)
    uid: int
    gid: int
    rdev: int = 0
    target: bytes = b""  # symlink target
    xattrs: tuple[bytes, ...] = ()  # names set in the mirror

    def content_differs(self, other: Entry) -> bool:
        if self.type != other.type:
            return True
        if self.type == FILE:
            return (self.size, self.mtime_ns, self.ino) != (other.size, other.mtime_ns, other.ino)
        if self.type == SYMLINK:
            return self.target != other.target
        return self.type != DIR and self.rdev != other.rdev

    def metadata_differs(self, other: Entry) -> bool:
        return (self.mode, self.uid, self.gid, self.mtime_ns, self.ctime_ns) != (
            other.mode,
            other.uid,
            other.gid,
            other.mtime_ns,
            other.ctime_ns,
        )

    def pack(self) -> list[object]:
        return [
            self.type,
            self.ino,
            self.nlink,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.atime_ns,
            self.mode,
            self.uid,
            self.gid,
            self.rdev,
            self.target,
            list(self.xattrs),
        ]

    @classmethod
    def unpack(cls, row: list[object]) -> Entry:
        values = list(row)
        values[12] = tuple(values[12])  # type: ignore[arg-type]
        return cls(*values)  # type: ignore[arg-type]


Tree = dict[bytes, Entry]  # "/a/b" (relative to the protected root) -> entry
ROOT = b"/"  # the protected folder itself


def entry_from_stat(st: os.stat_result, target: bytes = b"") -> Entry | None:
    kind = node_type(st.st_mode)
    if kind is None:
        return None
    return Entry(
        type=kind,
        ino=st.st_ino,
        nlink=st.st_nlink,
        size=st.st_size if kind == FILE else 0,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        atime_ns=st.st_atime_ns,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        rdev=st.st_rdev if kind not in (FILE, DIR, SYMLINK, SOCKET) else 0,
        target=target,
    )


@dataclass
class Scan:
    tree: Tree
    warnings: list[str] = field(default_factory=list)


def scan_tree(root: str, previous: Tree | None = None) -> Scan:
    """Record every entry below `root` (not following symlinks, root excluded).

    A directory that cannot be listed keeps what `previous` knew below it.
    """
    base = os.fsencode(os.path.abspath(root))
    tree: Tree = {}
    warnings: list[str] = []
    top = entry_from_stat(os.lstat(base))
    if top is None or top.type != DIR:
        raise NotADirectoryError(f"{os.fsdecode(base)}: not a directory")
    tree[ROOT] = top
    stack = [b""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(base + rel))
        except OSError as err:
            warnings.append(
                f"{os.fsdecode(base + rel)}: cannot list ({err.strerror}); kept as before"
            )
            if previous is not None and rel:
                tree.update(_subtree(previous, rel))
            continue
        for entry in entries:
            path = rel + b"/" + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
                target = os.readlink(entry.path) if stat.S_ISLNK(st.st_mode) else b""
            except FileNotFoundError:
                continue  # gone since listed
            except OSError as err:
                warnings.append(f"{os.fsdecode(base + path)}: {err.strerror}; skipped")
                continue
            record = entry_from_stat(st, os.fsencode(target))
            if record is None:
                continue
            tree[path] = record
            if record.type == DIR:
                stack.append(path)
    return Scan(tree, warnings)


def _subtree(tree: Tree, rel: bytes) -> Tree:
    prefix = rel + b"/"
    return {p: e for p, e in tree.items() if p.startswith(prefix)}


def with_xattrs(tree: Tree, names: dict[bytes, tuple[bytes, ...]]) -> Tree:
    """`tree` with the xattr names recorded for the paths in `names`."""
    out = dict(tree)
    for path, found in names.items():
        if path in out:
            out[path] = replace(out[path], xattrs=found)
    return out


def save_tree(tree: Tree) -> bytes:
    packed: bytes = msgpack.packb({p: e.pack() for p, e in tree.items()}, use_bin_type=True)
    return packed


def load_tree(data: bytes) -> Tree:
    raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return {bytes(path): Entry.unpack(row) for path, row in raw.items()}


@dataclass
class TreeChanges:
    """The difference between two scans, in the terms the mirror applies."""

    removed: list[bytes] = field(default_factory=list)  # gone or replaced (any type)
    created: list[bytes] = field(default_factory=list)  # new or replaced, parents first
    rewritten: list[bytes] = field(default_factory=list)  # same type, content changed
    renamed: list[tuple[bytes, bytes]] = field(default_factory=list)  # (old, new), files
    metadata: list[bytes] = field(default_factory=list)  # only owner/mode/times changed

    def __bool__(self) -> bool:
        return bool(self.removed or self.created or self.rewritten or self.renamed or self.metadata)

    @property
    def count(self) -> int:
        return (
            len(self.removed)
            + len(self.created)
            + len(self.rewritten)
            + len(self.renamed)
            + len(self.metadata)
        )


def diff_trees(old: Tree, new: Tree) -> TreeChanges:
    """What turns `old` into `new`. Files that moved (same inode, size and mtime,
    one link) are renames, so the mirror relinks them instead of copying data."""
    changes = TreeChanges()
    gone: dict[tuple[int, int, int], bytes] = {}
    for path, was in old.items():
        current = new.get(path)
        if current is None or current.type != was.type:
            changes.removed.append(path)
            if current is None and was.type == FILE and was.nlink == 1:
                gone[(was.ino, was.size, was.mtime_ns)] = path
    for path in sorted(new, key=_depth_order):
        after = new[path]
        before = old.get(path)
        if before is None or before.type != after.type:
            # A rename needs a free name: not one an entry of another type held.
            renamable = before is None and after.type == FILE and after.nlink == 1
            moved = gone.pop((after.ino, after.size, after.mtime_ns), None) if renamable else None
            if moved is not None:
                changes.renamed.append((moved, path))
                if after.metadata_differs(old[moved]):
                    changes.metadata.append(path)
            else:
                changes.created.append(path)
        elif after.content_differs(before):
            changes.rewritten.append(path)
        elif after.metadata_differs(before):
            changes.metadata.append(path)
    moved_from = {src for src, _ in changes.renamed}
    changes.removed = sorted(
        (p for p in changes.removed if p not in moved_from), key=_depth_order, reverse=True
    )
    return changes


def depth(path: bytes) -> int:
    """How deep `path` lies: 0 for the root, 1 for "/a", 2 for "/a/b"."""
    return 0 if path == ROOT else path.count(b"/")


def _depth_order(path: bytes) -> tuple[int, bytes]:
    return depth(path), path
