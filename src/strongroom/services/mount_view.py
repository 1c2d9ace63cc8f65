"""The folders `strongroom mount` shows: every point by id, by time, by host, by tag.

    ids/ID/                    each point under its full id
    snapshots/TIME/            by local time (2026-12-07T10:00:00; equal seconds: TIME-1, TIME-2)
    snapshots/latest           a symbolic link to the newest
    hosts/HOST/TIME/, hosts/HOST/latest
    tags/TAG/TIME/,   tags/TAG/latest

Inside a point's folder: a file point's tree as backed up (`/home/...`); an
image point's disk as `disk.raw` (its virtual size, readable at any offset),
the files of the file system on it under `files/` (ext2/3/4 or FAT, the
first readable partition, as `ls` reads it) and, for a disk with a partition
table, every readable partition's under `partitions/N/` (N as `ls
--partition N` counts); a VM point's disks as `disks/NAME.raw`.

New points show up as restic's do: listing or looking up the top folders
(the root, ids/, snapshots/, hosts/, tags/ and one host's or tag's folder)
lists the points again when `refresh_seconds` have passed since the last
time, reads the index files written since into the loaded index, and swaps
the layout in one assignment; a point already shown keeps its entry (open
files and the trees read stay valid), a point forgotten meanwhile goes.

Host and tag names come from point documents, so they are hostile: a name
that is not one safe path component is percent-escaped (`/` as `%2F`, `%` as
`%25`, NUL and control characters as `%XX`, `.`/`..`/empty spelled out) and a
name longer than NAME_MAX is cut and tagged with a hash, so every name maps to
one folder and no name leaves its folder.
"""

from __future__ import annotations

import errno
import hashlib
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from strongroom.formats.partitions import PartitionTableError, read_partitions
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.blockmaps import load_block_map, load_vm_manifest
from strongroom.repository.store import ChunkStore
from strongroom.services.mount_points import (
    Attr,
    ChunkCache,
    DiskFile,
    FilePointView,
    ImageFilesView,
    inode_number,
)
from strongroom.sources.image_files import ImageFileSystemError

NAME_MAX = 255
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
REFRESH_SECONDS = 5.0  # at most this often the points are listed again


class Handle(Protocol):
    """An open file of the mount."""

    def read(self, offset: int, size: int) -> bytes: ...


@dataclass
class Folder:
    attr: Attr
    children: dict[bytes, Entry] = field(default_factory=dict)


@dataclass
class Link:
    attr: Attr
    target: bytes


@dataclass
class FilesAt:
    """A folder whose contents a point view answers for (a file tree, an image's files)."""

    attr: Attr
    view: FilePointView | ImageFilesView


class _LazyPoint:
    """An image or VM point's folder, built (its maps read) on first lookup."""

    def __init__(self, attr: Attr, build: Callable[[], Folder]) -> None:
        self.attr, self._build = attr, build
        self._folder: Folder | None = None

    def resolve(self, lock: threading.Lock) -> Folder:
        with lock:
            if self._folder is None:
                self._folder = self._build()
            return self._folder


Entry = Folder | Link | FilesAt | DiskFile | _LazyPoint


def folder_name(text: str) -> bytes:
    """`text` (a host or tag name from a point) as one safe path component."""
    out = []
    for ch in text:
        if ch == "%" or ch == "/" or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    name = "".join(out)
    if name in ("", ".", ".."):
        name = {"": "%", ".": "%2E", "..": "%2E%2E"}[name]
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > NAME_MAX:
        tag = hashlib.blake2b(raw, digest_size=6).hexdigest()
        raw = raw[: NAME_MAX - 14].decode("utf-8", "ignore").encode() + b"~" + tag.encode()
    return raw


def time_names(points: list[RecoveryPoint]) -> dict[str, bytes]:
    """Each point's folder name by its local time; equal seconds as restic does
    (the first keeps the time, the next get `-1`, `-2`, ...). `points` oldest first."""
    names: dict[str, bytes] = {}
    used: set[str] = set()
    for p in points:
        base = p.time.astimezone().strftime(TIME_FORMAT)
        name, n = base, 0
        while name in used or name == "latest":
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        names[p.id] = name.encode()
    return names


class RepositoryView:
    """The whole mount as plain values; paths are bytes relative to the mount's root.

    Raises FileNotFoundError (PathNotFound), NotADirectoryError,
    IsADirectoryError, OSError with an errno, or a StrongroomError (damage: the
    adapter answers EIO)."""

    def __init__(
        self,
        repo: ChunkStore,
        points: list[RecoveryPoint],
        *,
        uid: int,
        gid: int,
        now_ns: int,
        reload: Callable[[], list[RecoveryPoint]] | None = None,
        refresh_index: Callable[[], object] | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.chunks = ChunkCache(repo)
        self._uid, self._gid = uid, gid
        self._disks: list[DiskFile] = []
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}  # point id -> its folder, kept across refreshes
        self._reload, self._refresh_seconds, self._clock = reload, refresh_seconds, clock
        self._refresh_index = refresh_index
        self._refresh_lock = threading.Lock()
        self._refreshed = clock()
        self._ids = {p.id for p in points}
        self.points = points  # those shown
        self.root = self._folder(b"", now_ns)
        self._build(points, now_ns)

    def refresh(self, force: bool = False) -> bool:
        """List the points again (the module docstring); whether the layout changed.
        At most once per `refresh_seconds` unless `force`; one thread at a time."""
        if self._reload is None:
            return False
        if not force and self._clock() - self._refreshed < self._refresh_seconds:
            return False
        if not self._refresh_lock.acquire(blocking=False):
            return False  # another thread is refreshing: use the layout as it is
        try:
            self._refreshed = self._clock()
            points = self._reload()
            ids = {p.id for p in points}
            if ids == self._ids:
                return False
            if self._refresh_index is not None:  # a local repository: the new points'
                self._refresh_index()  # chunks are in index files written since
            self._build(points, time.time_ns())
            self._ids, self.points = ids, points
            return True
        finally:
            self._refresh_lock.release()

    # --- layout -----------------------------------------------------------

    def _folder(self, key: bytes, time_ns: int) -> Folder:
        attr = Attr(
            stat.S_IFDIR | 0o555,
            inode_number(b"layout", key),
            0,
            2,
            self._uid,
            self._gid,
            time_ns,
            time_ns,
            time_ns,
        )
        return Folder(attr)

    def _link(self, key: bytes, target: bytes, time_ns: int) -> Link:
        attr = Attr(
            stat.S_IFLNK | 0o777,
            inode_number(b"layout", key),
            len(target),
            1,
            self._uid,
            self._gid,
            time_ns,
            time_ns,
            time_ns,
        )
        return Link(attr, target)

    def _build(self, points: list[RecoveryPoint], now_ns: int) -> None:
        """The layout of `points`, swapped in as one assignment when complete."""
        known = self._entries
        entries = {p.id: known.get(p.id) or self._point_entry(p) for p in points}
        self._entries = entries
        top = {
            name: self._folder(name, now_ns) for name in (b"ids", b"snapshots", b"hosts", b"tags")
        }
        for p in points:
            top[b"ids"].children[p.id.encode()] = entries[p.id]
        self._timeline(top[b"snapshots"], b"snapshots", points, entries, now_ns)
        by_host: dict[bytes, list[RecoveryPoint]] = defaultdict(list)
        by_tag: dict[bytes, list[RecoveryPoint]] = defaultdict(list)
        for p in points:
            by_host[folder_name(p.host)].append(p)
            for tag in dict.fromkeys(folder_name(t) for t in p.tags):
                by_tag[tag].append(p)
        for parent, groups in ((top[b"hosts"], by_host), (top[b"tags"], by_tag)):
            for name, group in groups.items():
                key = parent.attr.ino.to_bytes(8, "little") + name
                sub = parent.children[name] = self._folder(key, now_ns)
                self._timeline(sub, key, group, entries, now_ns)
        self.root.children = dict(top)  # readers see the old layout or the new one, whole

    def _timeline(
        self,
        folder: Folder,
        key: bytes,
        points: list[RecoveryPoint],
        entries: dict[str, Entry],
        now_ns: int,
    ) -> None:
        names = time_names(points)
        for p in points:
            folder.children[names[p.id]] = entries[p.id]
        if points:
            folder.children[b"latest"] = self._link(key + b"/latest", names[points[-1].id], now_ns)

    def _point_entry(self, p: RecoveryPoint) -> Entry:
        """A point's folder; its manifest is read on first use, not here."""
        when = int(p.time.timestamp() * 1e9)
        attr = self._folder(b"point:" + p.id.encode(), when).attr
        if p.kind == PointKind.FILES:
            view = FilePointView(self.repo, p.id, bytes.fromhex(p.tree), self.chunks)
            return FilesAt(attr, view)
        if p.kind in (PointKind.BLOCK, PointKind.VM):
            return _LazyPoint(attr, lambda: self._image_folder(p, attr))
        return Folder(attr)  # a kind this version does not know: shown empty, never read

    def _image_folder(self, p: RecoveryPoint, attr: Attr) -> Folder:
        folder = Folder(attr)
        key = p.id.encode()
        if p.kind == PointKind.BLOCK:
            disk = DiskFile(self.repo, load_block_map(self.repo, bytes.fromhex(p.tree)), key, attr)
            self._disks.append(disk)
            folder.children[b"disk.raw"] = disk
            files = _readable(ImageFilesView(disk))
            if files is not None:  # only a disk with a file system we read shows files/
                folder.children[b"files"] = FilesAt(files.attr([]), files)
            numbered = self._partitions(disk)
            if numbered:
                parts = self._folder(key + b"/partitions", attr.mtime_ns)
                folder.children[b"partitions"] = parts
                for number, view in numbered.items():
                    parts.children[b"%d" % number] = FilesAt(view.attr([]), view)
            return folder
        manifest = load_vm_manifest(self.repo, bytes.fromhex(p.tree))
        disks = folder.children[b"disks"] = self._folder(key + b"/disks", attr.mtime_ns)
        assert isinstance(disks, Folder)
        for d in manifest.disks:  # names checked by VmManifest.decode
            block_map = load_block_map(self.repo, bytes.fromhex(d.map_root))
            disk = DiskFile(self.repo, block_map, key + b"/" + d.name.encode(), attr)
            self._disks.append(disk)
            disks.children[d.name.encode() + b".raw"] = disk
        return folder

    @staticmethod
    def _partitions(disk: DiskFile) -> dict[int, ImageFilesView]:
        """The partitions of a disk that hold a file system we read, by number."""
        reader = disk.reader()
        try:
            table = read_partitions(reader.read, reader.size)
        except PartitionTableError:
            return {}
        found = {}
        for part in table:
            if part.type != "extended":
                view = _readable(ImageFilesView(disk, part.number))
                if view is not None:
                    found[part.number] = view
        return found

    # --- lookups ----------------------------------------------------------

    def _locate(self, path: bytes) -> tuple[Entry, list[bytes]]:
        """The layout entry a path lies in, and the components left for its view."""
        parts = [p for p in path.split(b"/") if p]
        if len(parts) <= 2 or (len(parts) == 3 and parts[0] in (b"hosts", b"tags")):
            self.refresh()  # the folders that list points: new ones may have come
        entry: Entry = self.root
        for i, part in enumerate(parts):
            if isinstance(entry, _LazyPoint):
                entry = entry.resolve(self._lock)
            if isinstance(entry, FilesAt):
                return entry, parts[i:]
            if not isinstance(entry, Folder):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            found = entry.children.get(part)
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "no such entry")
            entry = found
        return entry, []  # a _LazyPoint stays unread: `stat` of it needs no map

    def getattr(self, path: bytes) -> Attr:
        entry, rest = self._locate(path)
        if isinstance(entry, FilesAt):
            if isinstance(entry.view, FilePointView):
                return entry.view.attr(rest, entry.attr)
            return entry.view.attr(rest) if rest else entry.attr
        return entry.attr

    def readdir(self, path: bytes) -> list[bytes]:
        entry, rest = self._locate(path)
        if isinstance(entry, _LazyPoint):
            entry = entry.resolve(self._lock)
        if isinstance(entry, FilesAt):
            return entry.view.names(rest)
        if isinstance(entry, Folder):
            return list(entry.children)
        raise NotADirectoryError(errno.ENOTDIR, "not a directory")

    def readlink(self, path: bytes) -> bytes:
        entry, rest = self._locate(path)
        if isinstance(entry, FilesAt):
            return entry.view.readlink(rest)
        if isinstance(entry, Link):
            return entry.target
        raise OSError(errno.EINVAL, "not a symbolic link")

    def xattrs(self, path: bytes) -> dict[bytes, bytes]:
        entry, rest = self._locate(path)
        if isinstance(entry, FilesAt) and isinstance(entry.view, FilePointView):
            return entry.view.xattrs(rest)
        return {}

    def open(self, path: bytes) -> Handle:
        entry, rest = self._locate(path)
        if isinstance(entry, FilesAt):
            return entry.view.open(rest)
        if isinstance(entry, DiskFile):
            reader = entry.reader()
            return _DiskHandle(reader.read)
        if isinstance(entry, Folder | _LazyPoint):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        raise OSError(errno.EINVAL, "not a regular file")

    def close(self) -> None:
        for disk in self._disks:
            disk.close()


def _readable(view: ImageFilesView) -> ImageFilesView | None:
    """`view` if its file system opens, None if the disk or partition holds none we read."""
    try:
        view.filesystem()
    except (ImageFileSystemError, PartitionTableError):
        return None
    return view


class _DiskHandle:
    def __init__(self, read: Callable[[int, int], bytes]) -> None:
        self._read = read

    def read(self, offset: int, size: int) -> bytes:
        return self._read(offset, size)
