"""Matching a file backup against seeds: the seed index and the classifier.

A backup made against seeds records, for every entry, whether it came from a
seed (model/origin.py, docs/seeds.md). This module holds what that needs:

* `SeedFiles`: one seed's file list, loaded once at backup start by walking
  the seed's trees (bounded by `TreePath` and `MAX_SEED_ENTRIES`; the trees
  are checked by `decode_tree` like any tree from storage);
* `SeedMatcher`: the used seeds, the machine path their paths are relative
  to (`root`), and the rules that turn an entry into an `Origin`. The file
  pipeline calls it when a directory's tree is stored, i.e. when every
  child's chunk list is final, for fresh nodes and for entries passed
  through from the parent point alike; at the end `lacks()` lists the seed
  files the machine does not have, and `record()` the point's `PointSeeds`.

Memory: an entry is one 4-tuple (type, packed number/size/mode/mtime,
content, extra) in a dict keyed by its relative path; `content` is the file's
chunk ids joined (32 bytes per chunk), and the same bytes objects are key and
value of the content map used to find moved files, so they are held once.
Measured by tests/pipeline/test_seed_match.py with tracemalloc, index and
content map together: about 370 bytes per single-chunk file with a 30-byte
path, i.e. about 19 MB for a 50,000-file seed (asserted below 22 MB). Only
seeds that fit the source are kept.

All matching happens on the walking thread (store callbacks run there), so
nothing here needs a lock.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

from strongroom.chunking.base import Chunker
from strongroom.errors import IntegrityError
from strongroom.model.origin import FileClass, Origin, PointSeeds, UsedSeed
from strongroom.model.tree import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FILE,
    ID_SIZE,
    SYMLINK,
    Node,
    TreePath,
    decode_tree,
)
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkReader

# More entries than any real root file system holds (a full Debian desktop
# has about 400,000); a seed claiming more is refused rather than loaded.
MAX_SEED_ENTRIES = 5_000_000
PROBE_SAMPLE = 64  # seed paths lstat'ed to decide whether a seed fits the source


_META = struct.Struct("<IQIq")  # number, size, mode, mtime: one small bytes object


class SeedEntry(NamedTuple):
    type: str
    meta: bytes  # _META: number (position in `seen`), size, mode, mtime_ns
    content: bytes  # files: chunk ids joined; else b""
    extra: Any  # files: chunk sizes (None for one chunk); symlinks: target; devices: rdev

    @property
    def num(self) -> int:
        value: int = _META.unpack(self.meta)[0]
        return value

    @property
    def stat(self) -> tuple[int, int, int]:
        """(size, mode, mtime_ns)."""
        _, size, mode, mtime = _META.unpack(self.meta)
        return size, mode, mtime

    @property
    def size(self) -> int:
        return self.stat[0]

    def chunk_sizes(self) -> list[int]:
        if self.extra is None:
            return [self.size] if self.content else []
        return list(self.extra)


class SeedFiles:
    """One seed's file list: relative path -> entry, plus which entries the
    machine was seen to have during this backup."""

    __slots__ = ("by_content", "entries", "name", "seen")

    def __init__(self, name: str, entries: dict[bytes, SeedEntry]) -> None:
        self.name = name
        self.entries = entries
        self.seen = bytearray(len(entries))
        self.by_content: dict[bytes, bytes] = {}  # content -> first path (index_content)

    def index_content(self) -> None:
        """Map each non-empty file's content to its first path (for moved files):
        built only for the seeds a backup uses; keys and values are the
        entries' own bytes objects, so this costs the dict alone."""
        if self.by_content:
            return
        for rel, entry in self.entries.items():
            if entry.type == FILE and entry.content:
                self.by_content.setdefault(entry.content, rel)

    def has_dir(self, rel: bytes) -> bool:
        entry = self.entries.get(rel)
        return entry is not None and entry.type == DIR

    def files(self) -> list[bytes]:
        """The non-directory paths, sorted (the probe's deterministic order)."""
        return sorted(p for p, e in self.entries.items() if e.type != DIR)


def load_seed_files(
    repo: ChunkReader, name: str, tree_hex: str, limit: int = MAX_SEED_ENTRIES
) -> SeedFiles:
    """Walk a seed's file tree into a `SeedFiles`. IntegrityError for a damaged
    tree, nesting beyond MAX_TREE_DEPTH, a loop, or more than `limit` entries."""
    entries: dict[bytes, SeedEntry] = {}
    trees = TreePath()
    root = bytes.fromhex(tree_hex)
    trees.enter(root)
    stack: list[tuple[bytes, list[Node], int]] = [(b"", _load(repo, root), 0)]
    while stack:
        prefix, nodes, pos = stack[-1]
        if pos == len(nodes):
            stack.pop()
            trees.leave()
            continue
        stack[-1] = (prefix, nodes, pos + 1)
        node = nodes[pos]
        rel = prefix + node.name
        if len(entries) >= limit:
            raise IntegrityError(f"seed {name} holds more than {limit} entries")
        entries[rel] = _entry(len(entries), node)
        if node.type == DIR and node.subtree is not None:
            trees.enter(node.subtree)
            stack.append((rel + b"/", _load(repo, node.subtree), 0))
    return SeedFiles(name, entries)


def _load(repo: ChunkReader, tree_id: bytes) -> list[Node]:
    return decode_tree(repo.load_chunk(tree_id, BlobType.TREE))


def _entry(num: int, node: Node) -> SeedEntry:
    extra: Any = None
    content = b""
    if node.type == FILE:
        content = b"".join(node.chunks)
        if len(node.chunks) > 1:
            extra = tuple(node.chunk_sizes)
    elif node.type == SYMLINK:
        extra = node.link_target
    elif node.type in (CHARDEV, BLOCKDEV):
        extra = node.rdev
    meta = _META.pack(num, node.size, node.mode, node.mtime_ns)
    return SeedEntry(node.type, meta, content, extra)


def content_of(repo: Repository, chunker: Chunker, path: bytes) -> bytes:
    """A file's chunk ids joined, computed the way a backup cuts it (for
    `seed suggest`: confirming that a file matched by metadata has the
    seed's content). Reads the file; stores nothing."""
    ids = []
    with open(path, "rb", buffering=0) as stream:
        for view in chunker.chunks(stream):
            ids.append(repo.chunk_id(bytes(view)))
    return b"".join(ids)


def seed_path(root: bytes, path: bytes) -> bytes | None:
    """`path` (absolute, as walked) relative to `root`; None outside it or for root itself."""
    if root == b"/":
        return path[1:] or None
    if path.startswith(root + b"/"):
        return path[len(root) + 1 :]
    return None


def machine_path(root: bytes, rel: bytes) -> bytes:
    return (b"" if root == b"/" else root) + b"/" + rel


def in_scope(path: bytes, scope: Iterable[bytes]) -> bool:
    """Whether `path` is one of the backed-up paths or below one."""
    return any(p == b"/" or path == p or path.startswith(p + b"/") for p in scope)


def lacking(root: bytes, rel: bytes) -> bool:
    """True only if seed path `rel` certainly does not exist on the machine
    whose root is `root`. Directory links on the way are followed as the
    machine would follow them, inside `root` (`..` stops at the root, an
    absolute target starts there), never into this host's own files; a path
    that cannot be examined (permission denied, too many links) is not lacking."""
    todo = rel.split(b"/")
    done: list[bytes] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        here = machine_path(root, b"/".join([*done, part]))
        try:
            st = os.lstat(here)
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False
        if not todo:
            return False
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            try:
                target = os.readlink(here)
            except OSError:
                return False
            if hops > _MAX_LINKS:
                return False
            done = _within_root(done, target)
            continue
        if not stat.S_ISDIR(st.st_mode):
            return True
        done.append(part)
    return False


_MAX_LINKS = 40  # as the kernel's ELOOP limit


def _within_root(base: list[bytes], target: bytes) -> list[bytes]:
    """The components of link `target` met in directory `base` (components
    below the root), resolved as inside a chroot: an absolute target starts
    at the root and `..` never leaves it."""
    parts = [] if target.startswith(b"/") else list(base)
    for part in target.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return parts


def fits(seed: SeedFiles, root: bytes, scope: list[bytes], sample: int = PROBE_SAMPLE) -> bool:
    """A cheap, deterministic probe: lstat up to `sample` of the seed's files
    that fall in the backed-up scope, evenly spread over its sorted paths; the
    seed fits when at least half of them exist. A seed with no file in scope
    never fits (it could only flood the lacks list)."""
    paths = [p for p in seed.files() if in_scope(machine_path(root, p), scope)]
    if not paths:
        return False
    count = min(sample, len(paths))
    picked = [paths[i * len(paths) // count] for i in range(count)]
    found = sum(not lacking(root, p) for p in picked)
    return 2 * found >= count


def alias_through_symlinks(seed: SeedFiles, root: bytes) -> None:
    """Index a seed's entries also where the machine holds them when a seed
    directory is a symlink on the machine: a merged /usr (Debian packages ship
    `lib/x/libz.so.1`; dpkg put it in `usr/lib/x/libz.so.1` through
    `lib -> usr/lib`). The link is resolved as the machine would, inside
    `root` (an absolute target is relative to `root`, never to this host),
    one level, and only to a real directory; an entry the seed has at the
    resolved path wins."""
    aliases: list[tuple[bytes, bytes]] = []
    for rel, entry in seed.entries.items():
        if entry.type != DIR:
            continue
        resolved = _resolve_dir_link(root, rel)
        if resolved is not None and resolved != rel:
            aliases.append((rel + b"/", resolved + b"/"))
    for prefix, resolved in aliases:
        moved = {
            resolved + p[len(prefix) :]: e for p, e in seed.entries.items() if p.startswith(prefix)
        }
        for p, e in moved.items():
            seed.entries.setdefault(p, e)


def _resolve_dir_link(root: bytes, rel: bytes) -> bytes | None:
    """The root-relative directory that the symlink at `rel` on the machine
    names, or None (not a link, escapes the root, or not a directory)."""
    where = machine_path(root, rel)
    try:
        if not stat.S_ISLNK(os.lstat(where).st_mode):
            return None
        target = os.readlink(where)
    except OSError:
        return None
    parts = _within_root(rel.split(b"/")[:-1], target)
    if not parts:
        return None  # the root itself: its entries are the seed's already
    resolved = b"/".join(parts)
    try:
        if not stat.S_ISDIR(os.lstat(machine_path(root, resolved)).st_mode):
            return None  # a chain of links, or not a directory: not followed
    except OSError:
        return None
    return resolved


def choose_root(seeds: list[SeedFiles], paths: list[bytes]) -> bytes:
    """The machine path seed paths are relative to, when the user gave none:
    with one backed-up directory P that holds a machine's root file system (an
    extracted image, a snapshot mount: at least half of some seed's top-level
    directories are in it), P; otherwise "/" (P is a part of this machine:
    /usr/share, /home/ann, or / itself; or several paths were given)."""
    if len(paths) != 1 or paths[0] == b"/":
        return b"/"
    try:
        names = set(os.listdir(paths[0]))
    except OSError:
        return b"/"
    for seed in seeds:
        tops = {rel for rel, e in seed.entries.items() if b"/" not in rel and e.type == DIR}
        if tops and 2 * len(tops & names) >= len(tops):
            return paths[0]
    return b"/"


class _Counts:
    __slots__ = ("bytes", "files", "other")

    def __init__(self) -> None:
        self.files = self.bytes = self.other = 0


class SeedMatcher:
    """The used seeds (their order gives the indexes of `Origin.seeds`), the
    root, the backed-up scope, and the running statistics of one backup."""

    def __init__(
        self,
        seeds: list[SeedFiles],
        used: list[UsedSeed],
        root: bytes,
        scope: list[bytes],
        trust_metadata: bool = False,
    ) -> None:
        if len(seeds) != len(used):
            raise ValueError("one UsedSeed per seed")
        self.seeds = seeds
        self.used = used
        self.root = root
        self.scope = scope
        self.trust_metadata = trust_metadata
        for seed in seeds:
            seed.index_content()
            alias_through_symlinks(seed, root)
        self.counts = {c: _Counts() for c in FileClass}
        self.seed_bytes = [0] * len(seeds)
        self.trusted_files = 0

    # --- the rules ---------------------------------------------------------

    def trusted(self, path: bytes, node: Node) -> SeedEntry | None:
        """With --trust-seed-metadata: the seed file whose path, size, mode and
        mtime equal `node`'s (its chunk list is then taken without reading)."""
        if not self.trust_metadata:
            return None
        rel = seed_path(self.root, path)
        if rel is None:
            return None
        for seed in self.seeds:
            e = seed.entries.get(rel)
            if (
                e is not None
                and e.type == FILE
                and e.stat == (node.size, node.mode, node.mtime_ns)
                and len(e.content) == ID_SIZE * len(e.chunk_sizes())
            ):
                return e
        return None

    def classify(
        self,
        path: bytes,
        kind: str,
        size: int,
        content: bytes,
        sizes: list[int],
        target: bytes,
        rdev: int,
    ) -> Origin | None:
        """The origin of the entry at `path` (None: the machine's own), counted
        into the statistics and marked seen in every seed that has the path."""
        rel = seed_path(self.root, path)
        origin = None if rel is None else self._origin(rel, kind, size, content, target, rdev)
        if kind != DIR:
            self._count(origin, kind, size, content, sizes, rel)
        return origin

    def classify_node(self, dir_path: bytes, node: Node) -> None:
        node.origin = self.classify(
            dir_path + b"/" + node.name,
            node.type,
            node.size,
            b"".join(node.chunks),
            node.chunk_sizes,
            node.link_target,
            node.rdev,
        )

    def classify_wire(self, dir_path: bytes, wire: dict[str, Any]) -> dict[str, Any]:
        """A parent point's node map, with `sd` set for this backup's seeds (a
        copy when it changes: the seed set may differ from the parent's)."""
        content, sizes, target = wire.get("c", b""), wire.get("cs", []), wire.get("lt", b"")
        origin = self.classify(
            dir_path + b"/" + wire["n"],
            wire["t"],
            wire.get("sz", 0),
            content if type(content) is bytes else b"",
            sizes if type(sizes) is list else [],
            target if type(target) is bytes else b"",
            wire.get("rd", 0),
        )
        return with_origin(wire, origin)

    def _origin(
        self, rel: bytes, kind: str, size: int, content: bytes, target: bytes, rdev: int
    ) -> Origin | None:
        having: list[tuple[int, SeedEntry]] = []
        for i, seed in enumerate(self.seeds):
            e = seed.entries.get(rel)
            if e is not None:
                having.append((i, e))
                seed.seen[e.num] = 1
        if kind == DIR:
            dirs = tuple(i for i, e in having if e.type == DIR)
            if dirs:
                return Origin(FileClass.IDENTICAL, dirs)
            return Origin(FileClass.MODIFIED, tuple(i for i, _ in having)) if having else None
        if having:
            same = [i for i, e in having if _same(e, kind, content, target, rdev)]
            others = [i for i, _ in having if i not in same]
            cls = FileClass.IDENTICAL if same else FileClass.MODIFIED
            return Origin(cls, tuple(same + others))
        if kind == FILE and size > 0:
            for i, seed in enumerate(self.seeds):
                elsewhere = seed.by_content.get(content)
                if elsewhere is not None:
                    return Origin(FileClass.MOVED, (i,), elsewhere)
        return None

    def _count(
        self,
        origin: Origin | None,
        kind: str,
        size: int,
        content: bytes,
        sizes: list[int],
        rel: bytes | None,
    ) -> None:
        counts = self.counts[FileClass.OWN if origin is None else origin.cls]
        if kind != FILE:
            counts.other += 1
            return
        counts.files += 1
        counts.bytes += size
        if origin is None or rel is None:
            return
        first = origin.seeds[0]
        if origin.cls is FileClass.MODIFIED:
            seed_entry = self.seeds[first].entries[rel]
            self.seed_bytes[first] += _shared_bytes(content, sizes, seed_entry)
        else:
            self.seed_bytes[first] += size

    # --- the end of a backup ----------------------------------------------

    def lacks(self) -> list[tuple[int, bytes]]:
        """(seed index, seed path) of every seed non-directory entry in the
        backed-up scope that this backup did not meet and that does not exist
        on the machine (excluded or unreadable paths exist: not lacking)."""
        found = []
        for i, seed in enumerate(self.seeds):
            seen = seed.seen
            for rel, e in seed.entries.items():
                if e.type == DIR or seen[e.num]:
                    continue
                path = machine_path(self.root, rel)
                if in_scope(path, self.scope) and lacking(self.root, rel):
                    found.append((i, rel))
        return sorted(found)

    def record(self, lacks_id: str | None, lacks_count: int) -> PointSeeds:
        return PointSeeds(
            used=list(self.used),
            root=os.fsdecode(self.root),
            lacks=lacks_id,
            lacks_count=lacks_count,
            classes={
                c.word: {"files": n.files, "bytes": n.bytes, "other": n.other}
                for c, n in self.counts.items()
            },
            seed_bytes={u.name: b for u, b in zip(self.used, self.seed_bytes, strict=True)},
        )


def with_origin(wire: dict[str, Any], origin: Origin | None) -> dict[str, Any]:
    """`wire` with its `sd` key set to `origin` (dropped for None); the same
    map when nothing changes, so an unchanged tree re-encodes to equal bytes."""
    new = None if origin is None else origin.to_wire()
    if wire.get("sd") == new:
        return wire
    copy = {k: v for k, v in wire.items() if k != "sd"}
    if new is not None:
        copy["sd"] = new
    return copy


def _same(e: SeedEntry, kind: str, content: bytes, target: bytes, rdev: int) -> bool:
    """Same content: files the same chunk list, symlinks the same target,
    devices the same number; fifos and sockets by type alone."""
    if e.type != kind:
        return False
    if kind == FILE:
        return e.content == content
    if kind == SYMLINK:
        return bool(e.extra == target)
    if kind in (CHARDEV, BLOCKDEV):
        return bool(e.extra == rdev)
    return True


def _shared_bytes(content: bytes, sizes: list[int], seed: SeedEntry) -> int:
    """Bytes of a modified file held by chunks the seed's version has too."""
    if seed.type != FILE or not seed.content:
        return 0
    theirs = {seed.content[i : i + ID_SIZE] for i in range(0, len(seed.content), ID_SIZE)}
    return sum(
        size
        for size, start in zip(sizes, range(0, len(content), ID_SIZE), strict=False)
        if content[start : start + ID_SIZE] in theirs
    )
