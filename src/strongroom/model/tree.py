"""File-tree manifests: one tree per directory, stored as a TREE chunk.

A tree encodes (msgpack) a map {"v": 1, "nodes": [node, ...]} with nodes sorted
by name (bytes). Each node is a map with short keys (docs/format.md lists them);
absent keys mean "not recorded". Names and link targets are bytes, so names
that are not valid UTF-8 survive. A file's content is the concatenation of its
chunks, given as one bytes value of 32-byte ids ("c") and their sizes ("cs").

Trees come from storage, so decoding checks what a restore will trust: each
name is one path component (not empty, `.` or `..`, no `/` or NUL), names are
strictly increasing (sorted, no duplicates: `encode_wires` sorts), and a file's
chunk sizes add up to its size. Walkers bound nesting with `MAX_TREE_DEPTH` and
treat a tree met again on its own path as damage (`TreePath`).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any

import msgpack

from strongroom.errors import IntegrityError
from strongroom.model.names import names_problem
from strongroom.model.origin import ORIGIN_KEY, Origin

TREE_VERSION = 1
ID_SIZE = 32
# Deepest directory nesting a walker enters (restore, ls, diff, find): far more
# than any real tree (PATH_MAX allows about 2048 levels of one-byte names), and
# few enough that a walk stays within memory and descriptor limits.
MAX_TREE_DEPTH = 4096
_U32, _U64 = 2**32 - 1, 2**64 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

FILE = "f"
DIR = "d"
SYMLINK = "l"
FIFO = "p"
CHARDEV = "c"
BLOCKDEV = "b"
SOCKET = "s"
NODE_TYPES = (FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET)
# A node type's file-type bits in st_mode (S_IFREG, ...), for what shows nodes as stat results.
TYPE_BITS = {
    FILE: stat.S_IFREG,
    DIR: stat.S_IFDIR,
    SYMLINK: stat.S_IFLNK,
    FIFO: stat.S_IFIFO,
    CHARDEV: stat.S_IFCHR,
    BLOCKDEV: stat.S_IFBLK,
    SOCKET: stat.S_IFSOCK,
}


@dataclass(slots=True)
class Node:
    """One directory entry and its metadata; `chunks` is filled for files."""

    name: bytes
    type: str
    mode: int = 0o644  # permission bits including setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    size: int = 0
    inode: int = 0
    device: int = 0
    nlink: int = 1
    rdev: int = 0
    link_target: bytes = b""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    subtree: bytes | None = None
    origin: Origin | None = None  # seeded points only (model/origin.py); None: own

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "n": self.name,
            "t": self.type,
            "m": self.mode,
            "u": self.uid,
            "g": self.gid,
            "mt": self.mtime_ns,
            "at": self.atime_ns,
            "ct": self.ctime_ns,
        }
        if self.user:
            wire["un"] = self.user
        if self.group:
            wire["gn"] = self.group
        if self.type == FILE:
            wire["sz"] = self.size
            wire["c"] = b"".join(self.chunks)
            wire["cs"] = self.chunk_sizes
        if self.inode:
            wire["ino"] = self.inode
            wire["dev"] = self.device
            wire["nl"] = self.nlink
        if self.rdev:
            wire["rd"] = self.rdev
        if self.type == SYMLINK:
            wire["lt"] = self.link_target
        if self.xattrs:
            wire["x"] = self.xattrs
        if self.subtree is not None:
            wire["st"] = self.subtree
        if self.origin is not None:
            wire[ORIGIN_KEY] = self.origin.to_wire()
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Node:
        """Decode one node, checking every field's type (trees come from storage:
        a malformed one must raise IntegrityError, nothing else). Hot in incremental
        backups, hence the plain style."""
        try:
            get = wire.get
            content = get("c", b"")
            xattrs = get("x") or {}
            sizes = get("cs") or []
            subtree = get("st")
            origin = get(ORIGIN_KEY)
            node = cls(
                wire["n"],
                wire["t"],
                wire["m"],
                wire["u"],
                wire["g"],
                get("un", ""),
                get("gn", ""),
                wire["mt"],
                wire["at"],
                wire["ct"],
                get("sz", 0),
                get("ino", 0),
                get("dev", 0),
                get("nl", 1),
                get("rd", 0),
                get("lt", b""),
                xattrs,
                [content[i : i + ID_SIZE] for i in range(0, len(content), ID_SIZE)],
                sizes,
                subtree,
                None if origin is None else Origin.from_wire(origin),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise IntegrityError(f"malformed tree node: {err!r}") from None
        ints = (node.mode, node.uid, node.gid, node.mtime_ns, node.atime_ns, node.ctime_ns,
                node.size, node.inode, node.device, node.nlink, node.rdev)  # fmt: skip
        if (
            type(node.name) is not bytes
            or type(node.user) is not str
            or type(node.group) is not str
            or type(node.link_target) is not bytes
            or type(content) is not bytes
            or not all(type(v) is int for v in ints)
            or type(sizes) is not list
            or not all(type(v) is int for v in sizes)
            or type(xattrs) is not dict
            or not all(type(k) is bytes and type(v) is bytes for k, v in xattrs.items())
        ):
            raise IntegrityError("malformed tree node: a field has the wrong type")
        if node.type not in NODE_TYPES:
            raise IntegrityError(f"tree node has unknown type {node.type!r}")
        if (
            not 0 <= node.mode <= 0o7777
            or not 0 <= node.uid <= _U32
            or not 0 <= node.gid <= _U32
            or not _I64_MIN <= node.mtime_ns <= _I64_MAX
            or not _I64_MIN <= node.atime_ns <= _I64_MAX
            or not _I64_MIN <= node.ctime_ns <= _I64_MAX
            or not 0 <= node.size <= _I64_MAX
            or not 0 <= node.rdev <= _U64
        ):
            raise IntegrityError("malformed tree node: a number is out of range")
        if (node.link_target and b"\0" in node.link_target) or (
            xattrs and not all(k and b"\0" not in k for k in xattrs)
        ):
            raise IntegrityError("malformed tree node: a link target or xattr name holds NUL")
        if len(content) % ID_SIZE:
            raise IntegrityError("file node has a partial chunk id")
        if len(sizes) != len(node.chunks):
            raise IntegrityError("file node has chunk ids and sizes of different counts")
        if node.type == FILE and (sum(sizes) != node.size or (sizes and min(sizes) < 0)):
            raise IntegrityError("file node's chunk sizes do not add up to its size")
        if subtree is not None and (type(subtree) is not bytes or len(subtree) != ID_SIZE):
            raise IntegrityError("directory node has a malformed subtree id")
        return node

    @property
    def is_dir(self) -> bool:
        return self.type == DIR


def encode_tree(nodes: list[Node]) -> bytes:
    """Encode nodes (sorted by name here, so equal directories give equal bytes)."""
    return encode_wires([n.to_wire() for n in nodes])


def encode_wires(wires: list[dict[str, Any]]) -> bytes:
    """Encode nodes already in wire form (maps from `to_wire` or `decode_wires`).

    A wire map decoded from a tree re-encodes to the same bytes (msgpack keeps the
    key order), which lets an incremental backup pass unchanged entries through
    without building nodes."""
    ordered = sorted(wires, key=lambda w: w["n"])
    packed: bytes = msgpack.packb({"v": TREE_VERSION, "nodes": ordered}, use_bin_type=True)
    return packed


def decode_wires(blob: bytes) -> list[dict[str, Any]]:
    """The raw node maps of a tree (checked only for shape: `Node.from_wire` checks
    the fields when a node is needed)."""
    nodes = _decode_doc(blob)
    for wire in nodes:
        if not isinstance(wire, dict) or type(wire.get("n")) is not bytes:
            raise IntegrityError("tree node is not a map with a name")
    _check_names([wire["n"] for wire in nodes])
    return nodes


def decode_tree(blob: bytes) -> list[Node]:
    nodes = []
    for wire in _decode_doc(blob):
        if not isinstance(wire, dict):
            raise IntegrityError("tree node is not a map")
        nodes.append(Node.from_wire(wire))
    _check_names([node.name for node in nodes])
    return nodes


def _check_names(names: list[bytes]) -> None:
    problem = names_problem(names)
    if problem is not None:
        raise IntegrityError(f"tree is damaged: it holds {problem}")


class TreePath:
    """The trees on a walker's current path: refuses nesting deeper than
    `MAX_TREE_DEPTH` and a tree that contains itself (possible only in a damaged
    or forged repository), with an IntegrityError instead of a loop."""

    __slots__ = ("_ids", "_stack")

    def __init__(self) -> None:
        self._ids: set[bytes] = set()
        self._stack: list[bytes] = []

    def enter(self, tree_id: bytes) -> None:
        if tree_id in self._ids:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} is damaged: it contains itself")
        if len(self._stack) >= MAX_TREE_DEPTH:
            raise IntegrityError(
                f"tree {tree_id.hex()[:16]} is nested deeper than {MAX_TREE_DEPTH} levels"
            )
        self._ids.add(tree_id)
        self._stack.append(tree_id)

    def leave(self) -> None:
        self._ids.discard(self._stack.pop())

    def __len__(self) -> int:
        return len(self._stack)


def _decode_doc(blob: bytes) -> list[Any]:
    try:
        doc = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as err:
        raise IntegrityError(f"tree does not decode: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise IntegrityError("tree has no node list")
    version = doc.get("v", 0)
    if type(version) is not int:
        raise IntegrityError("tree has a malformed version")
    if version > TREE_VERSION:
        raise IntegrityError(f"tree version {version} is newer than this program")
    nodes: list[Any] = doc["nodes"]
    return nodes
