"""What `strongroom mount` shows inside one point: a file tree, a disk, the files on a disk.

Each class answers for paths below its point (a list of name components, as
bytes) with plain values (`Attr`, names, bytes); the FUSE adapter
(`mount_fuse`) only translates them. Everything here may be called from
several libfuse threads at once: the caches are guarded by locks, the
repository's `load_chunk` is thread-safe (restore and the NBD server call it
from pools), and a file system inside an image (not thread-safe, see
`sources.image_files`) is used under its own lock.

Hostile data stays bounded: names were checked when their tree was decoded
(`model.tree`), a lookup never goes deeper than the path the kernel gave
(PATH_MAX) and refuses a tree that contains itself, a read touches only the
chunks that overlap it (bisect on cumulative sizes), and decrypted chunks live
in a small LRU bounded in bytes. An all-zero chunk, once seen, is never loaded
again: a sparse file's holes cost nothing after the first.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import itertools
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

from strongroom.errors import IntegrityError, PathNotFound
from strongroom.model.blockmap import BlockMap
from strongroom.model.tree import (
    DIR,
    FILE,
    SYMLINK,
    TYPE_BITS,
    Node,
)
from strongroom.pipeline.image_reader import PointReader
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore
from strongroom.services.walk import load_tree
from strongroom.sources.image_files import ImageEntry, ImageFileSystem, open_filesystem

# Decoded directories kept, counted in entries (a directory may hold 100,000):
# a few hundred MiB of Python objects at the most.
TREE_CACHE_NODES = 200_000
CHUNK_CACHE_BYTES = 64 << 20  # decrypted file chunks kept (a few chunks of the usual 1 MiB)


@dataclass(frozen=True, slots=True)
class Attr:
    """What `stat` shows of one entry (st_mode holds the type bits)."""

    mode: int
    ino: int
    size: int = 0
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    rdev: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def inode_number(*parts: bytes) -> int:
    """A stable inode number for an entry named by `parts` (63 bits, never 0 or 1:
    the same entry gets the same number in every mount)."""
    digest = hashlib.blake2b(b"\0".join(parts), digest_size=8).digest()
    return max(2, int.from_bytes(digest, "little") >> 1)


class ChunkCache:
    """Decrypted data chunks by id, LRU, at most `capacity` bytes (thread-safe)."""

    def __init__(self, repo: ChunkStore, capacity: int = CHUNK_CACHE_BYTES) -> None:
        self.repo, self.capacity = repo, capacity
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()
        self._zero: dict[bytes, int] = {}  # ids of all-zero chunks: their size
        self._bytes = 0
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, chunk_id: bytes, size: int) -> bytes:
        with self._lock:
            if self._zero.get(chunk_id) == size:
                return bytes(size)
            data = self._chunks.get(chunk_id)
            if data is not None:
                self._chunks.move_to_end(chunk_id)
                return data
        data = self.repo.load_chunk(chunk_id, BlobType.DATA, size)
        if len(data) != size:
            raise IntegrityError(
                f"chunk {chunk_id.hex()[:16]} has {len(data)} bytes, expected {size}"
            )
        with self._lock:
            self.loads += 1
            if not data.strip(b"\0"):
                if len(self._zero) < 4096:
                    self._zero[chunk_id] = size
                return data
            if chunk_id not in self._chunks:
                self._chunks[chunk_id] = data
                self._bytes += len(data)
            while self._bytes > self.capacity and len(self._chunks) > 1:
                _, old = self._chunks.popitem(last=False)
                self._bytes -= len(old)
        return data


class FileReader:
    """Byte ranges of one file of a file point, from the chunks that overlap them."""

    def __init__(self, node: Node, chunks: ChunkCache) -> None:
        self.node, self.chunks = node, chunks
        self.size = node.size
        self._starts = [0, *itertools.accumulate(node.chunk_sizes)][:-1]

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset < 0 or offset >= end:
            return b""
        i = bisect.bisect_right(self._starts, offset) - 1
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            start, length = self._starts[i], self.node.chunk_sizes[i]
            if length:
                data = self.chunks.get(self.node.chunks[i], length)
                parts.append(data[pos - start : min(end - start, length)])
                pos = min(end, start + length)
            i += 1
        return b"".join(parts)


class FilePointView:
    """A file point's tree, looked up by path with decoded directories cached."""

    def __init__(self, repo: ChunkStore, point_id: str, root: bytes, chunks: ChunkCache) -> None:
        self.repo, self.point_key, self.root, self.chunks = repo, point_id.encode(), root, chunks
        self._trees: OrderedDict[bytes, dict[bytes, Node]] = OrderedDict()
        self._nodes = 0
        self._lock = threading.Lock()

    def _children(self, tree_id: bytes) -> dict[bytes, Node]:
        with self._lock:
            found = self._trees.get(tree_id)
            if found is not None:
                self._trees.move_to_end(tree_id)
                return found
        loaded = {n.name: n for n in load_tree(self.repo, tree_id)}
        with self._lock:
            if tree_id not in self._trees:
                self._trees[tree_id] = loaded
                self._nodes += len(loaded)
            while self._nodes > TREE_CACHE_NODES and len(self._trees) > 1:
                _, old = self._trees.popitem(last=False)
                self._nodes -= len(old)
        return loaded

    def node(self, parts: list[bytes]) -> Node | None:
        """The node at `parts` (None: the point's root); PathNotFound if absent,
        IntegrityError for a tree met again on its own path."""
        tree: bytes | None = self.root
        seen = {self.root}
        node: Node | None = None
        for part in parts:
            if tree is None:
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            node = self._children(tree).get(part)
            if node is None:
                raise PathNotFound("no such entry")
            tree = node.subtree if node.type == DIR else None
            if tree is not None:
                if tree in seen:
                    raise IntegrityError(f"tree {tree.hex()[:16]} is damaged: it contains itself")
                seen.add(tree)
        return node

    def attr(self, parts: list[bytes], root_attr: Attr) -> Attr:
        node = self.node(parts)
        if node is None:
            return root_attr
        if node.type != DIR and node.inode and node.nlink > 1:
            # hard links: one number for every name of the same stored file
            ino = inode_number(self.point_key, b"i", b"%d:%d" % (node.device, node.inode))
        else:
            ino = inode_number(self.point_key, b"p", *parts)
        return Attr(
            mode=TYPE_BITS[node.type] | node.mode,
            ino=ino,
            size=node.size if node.type == FILE else len(node.link_target),
            nlink=max(1, node.nlink) if node.type != DIR else 2,
            uid=node.uid,
            gid=node.gid,
            atime_ns=node.atime_ns,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.ctime_ns,
            rdev=node.rdev,
        )

    def names(self, parts: list[bytes]) -> list[bytes]:
        node = self.node(parts)
        if node is None:
            return list(self._children(self.root))
        if node.type != DIR:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        return [] if node.subtree is None else list(self._children(node.subtree))

    def readlink(self, parts: list[bytes]) -> bytes:
        node = self.node(parts)
        if node is None or node.type != SYMLINK:
            raise ValueError("not a symbolic link")
        return node.link_target

    def xattrs(self, parts: list[bytes]) -> dict[bytes, bytes]:
        node = self.node(parts)
        return {} if node is None else node.xattrs

    def open(self, parts: list[bytes]) -> FileReader:
        node = self.node(parts)
        if node is None or node.type != FILE:
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        return FileReader(node, self.chunks)


class DiskFile:
    """One disk of an image or VM point as a read-only file; its reader starts on first use."""

    def __init__(self, repo: ChunkStore, block_map: BlockMap, key: bytes, attr: Attr) -> None:
        self.repo, self.map, self.key = repo, block_map, key
        self.attr = Attr(
            stat.S_IFREG | 0o444,
            inode_number(key, b"disk"),
            block_map.size,
            1,
            attr.uid,
            attr.gid,
            attr.atime_ns,
            attr.mtime_ns,
            attr.ctime_ns,
        )
        self._reader: PointReader | None = None
        self._lock = threading.Lock()

    def reader(self) -> PointReader:
        with self._lock:
            if self._reader is None:
                self._reader = PointReader(self.repo, self.map, cache_bytes=64 << 20, readahead=4)
            return self._reader

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()


class ImageFilesView:
    """The file system inside a disk: on `partition` (a number as `ls --partition`
    takes it), or None for the first readable one, as `ls` takes it.

    The file-system readers are not thread-safe: every call holds this view's
    lock, and each open file keeps its own file object."""

    def __init__(self, disk: DiskFile, partition: int | None = None) -> None:
        self.disk, self.partition = disk, partition
        self._key = b"f" if partition is None else b"f%d" % partition
        self._fs: ImageFileSystem | None = None
        self._lock = threading.RLock()

    def filesystem(self) -> ImageFileSystem:
        """Opened on first use; ImageFileSystemError when the disk holds none we read."""
        with self._lock:
            if self._fs is None:
                self._fs = open_filesystem(self.disk.reader().stream(), self.partition)
            return self._fs

    def _path(self, parts: list[bytes]) -> str:
        return "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in parts)

    def _entry(self, parts: list[bytes]) -> ImageEntry:
        with self._lock:
            return self.filesystem().stat(self._path(parts))

    def attr(self, parts: list[bytes]) -> Attr:
        e = self._entry(parts)
        mtime = int(e.mtime * 1e9)
        return Attr(
            mode=TYPE_BITS[e.node_type] | (e.mode & 0o7777),
            ino=inode_number(self.disk.key, self._key, *parts),
            size=len(e.target.encode("utf-8", "surrogateescape"))
            if e.type == "symlink"
            else e.size,
            nlink=2 if e.type == "dir" else 1,
            uid=e.uid,
            gid=e.gid,
            atime_ns=mtime,
            mtime_ns=mtime,
            ctime_ns=mtime,
        )

    def names(self, parts: list[bytes]) -> list[bytes]:
        with self._lock:
            entries = self.filesystem().list(self._path(parts))
        return [e.path.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape") for e in entries]

    def readlink(self, parts: list[bytes]) -> bytes:
        e = self._entry(parts)
        if e.type != "symlink":
            raise ValueError("not a symbolic link")
        return e.target.encode("utf-8", "surrogateescape")

    def open(self, parts: list[bytes]) -> ImageFileReader:
        with self._lock:
            return ImageFileReader(self, self.filesystem().open(self._path(parts)))


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class ImageFileReader:
    """One open file inside an image (reads under the file system's lock)."""

    def __init__(self, view: ImageFilesView, f: BinaryIO) -> None:
        self.view, self.file = view, f

    def read(self, offset: int, size: int) -> bytes:
        with self.view._lock:
            self.file.seek(offset)
            return self.file.read(size)

    def close(self) -> None:
        with self.view._lock:
            self.file.close()
