"""Files inside a disk-image recovery point: list, stat, read and extract them without a restore.

The disk is a seekable read-only stream served from the repository, possibly
many GiB, so the file systems are read by libraries that work on a file-like
object and touch only the metadata they need: ext2/3/4 through libfsext
(`pyfsext`: block maps, extents, htree and inline data alike) and FAT12/16/32
through the `PyFat` core of `pyfatfs` (without its PyFilesystem2 layer). The
partition table is parsed by `strongroom.formats.partitions`.

The image may be damaged, so the libraries are fenced in: a FAT boot sector is
checked before pyfatfs sees it, FAT cluster chains are bounded and checked,
directory loops are cut in `walk`, names that could escape a restore target
("..", "a/b") are skipped, and every library exception becomes one
`ImageFileSystemError` line. Errors of the disk stream itself (repository,
network) pass through unchanged, even when raised inside a library callback.
An entry that cannot be read is skipped and noted in `warnings` rather than
raised, so one bad entry does not hide its directory. Not thread-safe: open one
file system per thread.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import posixpath
import stat
import struct
import warnings as pywarnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar

import pyfsext  # type: ignore[import-not-found, import-untyped, unused-ignore]
from pyfatfs.PyFat import PyFat  # type: ignore[import-not-found, import-untyped, unused-ignore]

from strongroom.errors import PathNotFound, SourceError, StrongroomError
from strongroom.formats.partitions import Partition, PartitionTableError, read_partitions

SUPPORTED = "strongroom reads ext2/3/4 and FAT"
MAX_FAT_BYTES = 32 << 20  # pyfatfs holds the whole FAT as a Python list (~36 bytes an entry)
MAX_WARNINGS = 1000
_COPY_CHUNK = 1 << 20
_HOLE_CHUNK = 64 << 10
_T = TypeVar("_T")


class ImageFileSystemError(SourceError):
    """A file system inside an image is damaged, unsupported, or asked for something it lacks."""


class UnsupportedFileSystem(ImageFileSystemError):
    """The image or partition holds no file system strongroom can read."""


class ImageReadError(SourceError):
    """The disk stream under a file system failed with an error that is not strongroom's own."""


@dataclass(frozen=True)
class ImageEntry:
    """One entry of a file system inside an image; `path` is absolute, "/" separated."""

    path: str
    type: str  # "file", "dir", "symlink", "other"
    size: int
    mode: int  # permission bits only
    mtime: float  # POSIX seconds
    uid: int = 0
    gid: int = 0
    target: str = ""


class ImageFileSystem(Protocol):
    """A read-only file system inside a disk image; paths are absolute inside it.

    `warnings` collects what was skipped (unreadable entries, directory loops) or
    is doubtful (journal not replayed); callers report it, nothing is raised.
    """

    kind: str
    warnings: builtins.list[str]

    def list(self, path: str) -> builtins.list[ImageEntry]: ...
    def stat(self, path: str) -> ImageEntry: ...
    def walk(self, path: str = "/") -> Iterator[ImageEntry]: ...
    def open(self, path: str) -> BinaryIO: ...


class SeekableReader(Protocol):
    """What `open_filesystem` needs of the disk: a `BinaryIO` or an `io.RawIOBase` will do."""

    def read(self, size: int = -1, /) -> bytes | None: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


# --- the disk --------------------------------------------------------------------------


class DiskView(io.RawIOBase):
    """A read-only window [start, start + size) of a seekable stream, with a small block cache.

    The cache (BLOCKS blocks of BLOCK bytes) turns the many tiny reads of the
    libraries into a few aligned reads of the stream; large reads bypass it. The
    last exception of the stream is kept in `failure`, because a library calling
    `readinto` from C replaces it with an error of its own.
    """

    BLOCK = 4096
    BLOCKS = 256

    def __init__(self, base: SeekableReader, start: int, size: int) -> None:
        super().__init__()
        self._base, self._start, self.size = base, start, size
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:  # libbfio asks for the size by this name
        return self.size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = _seek(self._pos, self.size, offset, whence)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        data = self.pread(self._pos, len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def pread(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`; short only at the end of the window."""
        size = max(0, min(size, self.size - offset))
        if size >= self.BLOCK:
            return self._fetch(offset, size)
        parts = []
        while size > 0:
            index, skip = divmod(offset, self.BLOCK)
            part = self._block(index)[skip : skip + size]
            if not part:
                break
            parts.append(part)
            offset, size = offset + len(part), size - len(part)
        return b"".join(parts)

    def _block(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is None:
            start = index * self.BLOCK
            block = self._cache[index] = self._fetch(start, min(self.BLOCK, self.size - start))
            if len(self._cache) > self.BLOCKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return block

    def _fetch(self, offset: int, size: int) -> bytes:
        try:
            self._base.seek(self._start + offset)
            parts: list[bytes] = []
            while size > 0:
                part = self._base.read(size)
                if not part:
                    break
                parts.append(part)
                size -= len(part)
            return b"".join(parts)
        except BaseException as exc:
            self.failure = exc
            raise


def _seek(pos: int, size: int, offset: int, whence: int) -> int:
    base = {io.SEEK_SET: 0, io.SEEK_CUR: pos, io.SEEK_END: size}.get(whence)
    if base is None or base + offset < 0:
        raise OSError(errno.EINVAL, "invalid seek")
    return base + offset


# --- opening ---------------------------------------------------------------------------


def open_filesystem(disk: SeekableReader, partition: int | None = None) -> ImageFileSystem:
    """Open the ext2/3/4 or FAT file system of a disk image, reading only its metadata.

    `partition` is a number as `read_partitions` gives it, or 0 for the whole
    disk (a bare file system). None chooses the first partition that holds a
    supported file system, or the whole disk when there is no partition table.
    Raises `UnsupportedFileSystem` naming what was found, `PartitionTableError`
    or `ImageFileSystemError` when the table or the file system is damaged.
    """
    size = disk.seek(0, io.SEEK_END)
    whole = DiskView(disk, 0, size)
    table_error: PartitionTableError | None = None
    try:
        parts = read_partitions(whole.pread, size)
    except PartitionTableError as exc:
        parts, table_error = [], exc
    if any(p.number == partition and p.type == "extended" for p in parts):
        raise ImageFileSystemError(
            f"partition {partition} is an extended partition: its logical ones count from 5"
        )
    parts = [p for p in parts if p.type != "extended"]
    if partition == 0 or (partition is None and not parts):
        found = _probe(whole)
        if found.supported:
            return _open(whole, found, "the disk")
        if table_error is not None:
            raise table_error
        raise UnsupportedFileSystem(
            f"the disk holds {found.kind or 'no known file system'}; {SUPPORTED}"
        )
    if table_error is not None:
        raise table_error
    if partition is not None:
        parts = [p for p in parts if p.number == partition]
        if not parts:
            raise ImageFileSystemError(f"the disk has no partition {partition}")
    seen: list[str] = []
    for part in parts:
        view = DiskView(disk, part.start, part.size)
        found = _probe(view)
        if found.supported:
            return _open(view, found, f"partition {part.number}")
        seen.append(f"partition {part.number} holds {_describe(part, found)}")
    if partition is None:
        found = _probe(whole)
        if found.supported:  # a bare file system whose boot code reads as a table
            return _open(whole, found, "the disk")
    raise UnsupportedFileSystem(f"{', '.join(seen)}; {SUPPORTED}")


@dataclass(frozen=True)
class _Probe:
    kind: str  # "ext4", "fat32", a foreign name such as "ntfs", or ""
    supported: bool = False
    fat: _FatLayout | None = None
    notes: tuple[str, ...] = ()


def _describe(part: Partition, found: _Probe) -> str:
    return found.kind or f"no known file system (partition type {part.type})"


_FOREIGN = (  # (offset, magic, name): enough to name what strongroom cannot read
    (3, b"NTFS    ", "ntfs"),
    (3, b"EXFAT   ", "exfat"),
    (0, b"XFSB", "xfs"),
    (0, b"LUKS\xba\xbe", "luks"),
    (0, b"hsqs", "squashfs"),
    (512, b"LABELONE", "lvm2"),
    (1024, b"\x10\x20\xf5\xf2", "f2fs"),
    (4086, b"SWAPSPACE2", "swap"),
    (0x10040, b"_BHRfS_M", "btrfs"),
    (32769, b"CD001", "iso9660"),
)


def _probe(view: DiskView) -> _Probe:
    """Name the file system by superblock or boot sector, checking what a library will trust."""
    superblock = view.pread(1024, 1024)
    if len(superblock) == 1024 and superblock[56:58] == b"\x53\xef":
        return _probe_ext(superblock)
    for offset, magic, name in _FOREIGN:
        if view.pread(offset, len(magic)) == magic:
            return _Probe(name)
    layout = _FatLayout.parse(view.pread(0, 512), view.size)
    return _Probe(layout.kind, True, layout) if layout else _Probe("")


def _probe_ext(sb: bytes) -> _Probe:
    inodes, blocks, log_block, per_group, inodes_per_group = struct.unpack_from("<II16xI4xI4xI", sb)
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
    if incompat & 0x8:
        return _Probe("an ext journal device")
    if not (inodes and blocks and per_group and inodes_per_group and log_block <= 6):
        raise ImageFileSystemError("ext superblock is damaged (zero counts or bad block size)")
    # Features beyond what ext3 knows make it ext4: blkid's rule.
    beyond_ext3 = incompat & ~0x16 or ro_compat & ~0x7
    kind = "ext4" if beyond_ext3 else "ext3" if compat & 0x4 else "ext2"
    notes = []
    if incompat & 0x4:
        notes.append(
            f"{kind} journal not replayed (unclean unmount): recent changes may be missing"
        )
    if incompat & 0x10000:
        notes.append(f"{kind} uses fscrypt: encrypted files and names read as ciphertext")
    return _Probe(kind, True, notes=tuple(notes))


@dataclass(frozen=True)
class _FatLayout:
    """The parts of a FAT boot sector that bound everything pyfatfs will read."""

    kind: str
    cluster: int  # bytes
    first_data: int  # bytes
    clusters: int

    @classmethod
    def parse(cls, boot: bytes, volume: int) -> _FatLayout | None:
        """The layout, None when this is no FAT boot sector; raises when it is a damaged one."""
        if len(boot) < 512 or boot[510:512] != b"\x55\xaa" or boot[0] not in (0xEB, 0xE9):
            return None
        sector, per_cluster, reserved, fats, roots, total16, media, fat16 = struct.unpack_from(
            "<HBHBHHBH", boot, 11
        )
        total32, fat32 = struct.unpack_from("<II", boot, 32)
        if (
            sector not in (512, 1024, 2048, 4096)
            or per_cluster not in (1, 2, 4, 8, 16, 32, 64, 128)
            or not reserved
            or not 1 <= fats <= 4
            or not (media == 0xF0 or media >= 0xF8)
        ):
            return None
        total, fat_sectors = total16 or total32, fat16 or fat32
        first_data = reserved + fats * fat_sectors + -(-roots * 32 // sector)
        if not fat_sectors or first_data >= total or first_data * sector > volume:
            raise ImageFileSystemError("FAT boot sector is damaged (areas past the volume end)")
        clusters = (total - first_data) // per_cluster
        kind = "fat12" if clusters < 4085 else "fat16" if clusters < 65525 else "fat32"
        need = {"fat12": (clusters + 2) * 3 // 2, "fat16": (clusters + 2) * 2}.get(
            kind, (clusters + 2) * 4
        )
        if fat_sectors * sector < need or (kind == "fat32") != (roots == 0 and fat16 == 0):
            raise ImageFileSystemError(f"{kind} boot sector is damaged (FAT too small, misplaced)")
        if fat_sectors * sector > MAX_FAT_BYTES:
            raise UnsupportedFileSystem(
                f"{kind} allocation table of {fat_sectors * sector >> 20} MiB is larger than "
                f"the {MAX_FAT_BYTES >> 20} MiB strongroom reads"
            )
        return cls(kind, sector * per_cluster, first_data * sector, clusters)


def _open(view: DiskView, found: _Probe, where: str) -> ImageFileSystem:
    if found.fat is not None:
        return _FatFileSystem(view, found.fat, where)
    return _ExtFileSystem(view, found, where)


# --- what both file systems share ------------------------------------------------------


def _split(path: str) -> list[str]:
    return [part for part in posixpath.normpath("/" + path).split("/") if part]


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


def _one_line(exc: BaseException) -> str:
    """A short message from a library error; libyal chains "function: text." clauses."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    short = ": ".join(c.split(": ", 1)[-1] for c in text.split(". ")[:2] if c).rstrip(".")
    return short if len(short) <= 160 else short[:157] + "..."


class _TreeFileSystem:
    """list/stat/walk/open over three primitives a library adapter provides.

    A node is the library's handle of an entry; `_children` returns each child's
    plain name, entry and node, and the names are checked here before use.
    """

    kind = ""

    def __init__(self, view: DiskView, where: str) -> None:
        self.view, self.where = view, where
        self.warnings: list[str] = []
        # Children of the last few directories listed, by path: walk-then-open stays linear.
        self._recent: OrderedDict[str, dict[str, tuple[ImageEntry, Any]]] = OrderedDict()

    def _root(self) -> tuple[ImageEntry, Any]:
        raise NotImplementedError

    def _children(self, entry: ImageEntry, node: Any) -> list[tuple[str, ImageEntry, Any]]:
        raise NotImplementedError

    def _key(self, node: Any) -> int:
        """Identity of a directory (inode, first cluster), for loop detection."""
        raise NotImplementedError

    def _reader(self, entry: ImageEntry, node: Any) -> io.RawIOBase:
        raise NotImplementedError

    def _matches(self, stored: str, wanted: str) -> bool:
        """Whether the entry at path `stored` has the name `wanted`."""
        return posixpath.basename(stored) == wanted

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS and message not in self.warnings:
            self.warnings.append(message)

    @contextmanager
    def guard(self, where: str) -> Iterator[None]:
        """Turn library errors into one ImageFileSystemError line; let stream errors through."""
        self.view.failure = None
        try:
            yield
        except _ChainError as exc:
            raise ImageFileSystemError(
                f"{self.kind} in {self.where}: cannot read {where}: {exc}"
            ) from exc
        except StrongroomError:
            raise
        except Exception as exc:
            failure = self.view.failure
            if isinstance(failure, StrongroomError):
                raise failure from None
            if failure is not None:
                raise ImageReadError(f"cannot read the disk image: {failure}") from failure
            raise ImageFileSystemError(
                f"{self.kind} in {self.where}: cannot read {where}: {_one_line(exc)}"
            ) from exc

    def soft(self, where: str, call: Callable[[], _T], default: _T) -> _T:
        """`call()` under `guard`, but a damaged entry becomes a warning and `default`."""
        try:
            with self.guard(where):
                return call()
        except ImageFileSystemError as exc:
            self.warn(str(exc))
            return default

    def _listing(self, entry: ImageEntry, node: Any) -> list[tuple[ImageEntry, Any]]:
        kids = []
        for name, child, child_node in self._children(entry, node):
            if name in ("", ".", "..") or "/" in name or "\0" in name:
                self.warn(f"skipped an entry named {name!r} in {entry.path}")
            else:
                kids.append((child, child_node))
        kids.sort(key=lambda kid: kid[0].path)
        self._recent[entry.path] = {kid[0].path: kid for kid in kids}
        if len(self._recent) > 4:
            self._recent.popitem(last=False)
        return kids

    def _cached(self, path: str) -> tuple[ImageEntry, Any] | None:
        return self._recent.get(posixpath.dirname(path), {}).get(path)

    def _soft_listing(self, entry: ImageEntry, node: Any) -> list[tuple[ImageEntry, Any]]:
        try:
            return self._listing(entry, node)
        except ImageFileSystemError as exc:
            self.warn(str(exc))
            return []

    def _lookup(self, path: str) -> tuple[ImageEntry, Any]:
        entry, node = self._root()
        parts = _split(path)
        hit = self._cached("/" + "/".join(parts))
        if hit is not None:
            return hit
        for name in parts:
            if entry.type != "dir":
                raise PathNotFound(f"{_join(entry.path, name)}: {entry.path} is not a directory")
            match = [c for c in self._listing(entry, node) if self._matches(c[0].path, name)]
            if not match:
                raise PathNotFound(f"{_join(entry.path, name)} not found in {self.where}")
            entry, node = match[0]
        return entry, node

    def _directory(self, path: str) -> tuple[ImageEntry, Any]:
        entry, node = self._lookup(path)
        if entry.type != "dir":
            raise ImageFileSystemError(f"{entry.path} is not a directory")
        return entry, node

    def list(self, path: str) -> list[ImageEntry]:
        """Entries of a directory, sorted by name; PathNotFound when it is missing."""
        return [child for child, _ in self._listing(*self._directory(path))]

    def stat(self, path: str) -> ImageEntry:
        return self._lookup(path)[0]

    def walk(self, path: str = "/") -> Iterator[ImageEntry]:
        """Every entry below `path` (not `path` itself), depth first, siblings by name.

        A directory that cannot be read, or that is its own ancestor (a damaged
        file system), is yielded but not entered, and noted in `warnings`.
        """
        entry, node = self._directory(path)
        stack = [(iter(self._listing(entry, node)), self._key(node))]
        ancestors = {stack[0][1]}
        while stack:
            child = next(stack[-1][0], None)
            if child is None:
                ancestors.discard(stack.pop()[1])
                continue
            yield child[0]
            if child[0].type != "dir":
                continue
            key = self._key(child[1])
            if key in ancestors:
                self.warn(f"directory loop: {child[0].path} is one of its own parents")
                continue
            kids = self._soft_listing(*child)
            ancestors.add(key)
            stack.append((iter(kids), key))

    def open(self, path: str) -> BinaryIO:
        """A buffered stream of a regular file's bytes, read lazily as it is consumed."""
        entry, node = self._lookup(path)
        if entry.type != "file":
            raise ImageFileSystemError(f"{entry.path} is not a regular file")
        return io.BufferedReader(self._reader(entry, node), buffer_size=256 << 10)


class _FileReader(io.RawIOBase):
    """`size` bytes through `fetch(offset, size)`; a file ending early is damage, not EOF."""

    def __init__(
        self, fs: _TreeFileSystem, entry: ImageEntry, fetch: Callable[[int, int], bytes]
    ) -> None:
        super().__init__()
        self._fs, self._entry, self._fetch = fs, entry, fetch
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = _seek(self._pos, self._entry.size, offset, whence)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = max(0, min(len(buffer), self._entry.size - self._pos))
        if not want:
            return 0
        with self._fs.guard(self._entry.path):
            data = self._fetch(self._pos, want)
        if not data:
            raise ImageFileSystemError(
                f"{self._entry.path} ends at byte {self._pos} of {self._entry.size} "
                f"({self._fs.kind} in {self._fs.where} is damaged)"
            )
        memoryview(buffer).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)


# --- ext2/3/4 through libfsext ---------------------------------------------------------

_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}


class _ExtFileSystem(_TreeFileSystem):
    def __init__(self, view: DiskView, found: _Probe, where: str) -> None:
        super().__init__(view, where)
        self.kind = found.kind
        for note in found.notes:
            self.warn(note)
        self._volume = pyfsext.volume()
        with self.guard("its superblock"):
            self._volume.open_file_object(view)

    def _entry(self, path: str, node: Any) -> ImageEntry:
        mode = int(node.file_mode)
        kind = _TYPES.get(stat.S_IFMT(mode), "other")
        target = ""
        if kind == "symlink":
            target = self.soft(path, lambda: str(node.symbolic_link_target or ""), "")
        return ImageEntry(
            path,
            kind,
            int(node.size),
            stat.S_IMODE(mode),
            int(node.get_modification_time_as_integer()) / 1e9,
            int(node.owner_identifier),
            int(node.group_identifier),
            target,
        )

    def _root(self) -> tuple[ImageEntry, Any]:
        with self.guard("/"):
            node = self._volume.get_root_directory()
            return self._entry("/", node), node

    def _children(self, entry: ImageEntry, node: Any) -> list[tuple[str, ImageEntry, Any]]:
        with self.guard(entry.path):
            count = int(node.number_of_sub_file_entries)
        kids = []
        for index in range(count):

            def child(index: int = index) -> tuple[str, ImageEntry, Any]:
                sub = node.get_sub_file_entry(index)
                name = str(sub.name)
                return name, self._entry(_join(entry.path, name), sub), sub

            kid = self.soft(f"entry {index} of {entry.path}", child, None)
            if kid is not None:
                kids.append(kid)
        return kids

    def _lookup(self, path: str) -> tuple[ImageEntry, Any]:
        """libfsext's own lookup first; the generic walk only to explain a failure."""
        normal = "/" + "/".join(_split(path))
        hit = self._cached(normal)
        if hit is not None:
            return hit
        try:
            with self.guard(normal):
                node = self._volume.get_file_entry_by_path(normal)
                if node is not None:
                    return self._entry(normal, node), node
        except ImageFileSystemError:
            pass
        return super()._lookup(normal)

    def _key(self, node: Any) -> int:
        return int(node.inode_number)

    def _reader(self, entry: ImageEntry, node: Any) -> io.RawIOBase:
        def fetch(offset: int, size: int) -> bytes:
            return bytes(node.read_buffer_at_offset(size, offset))

        return _FileReader(self, entry, fetch)


# --- FAT12/16/32 through pyfatfs -------------------------------------------------------


class _ChainError(ImageFileSystemError):
    """A FAT cluster chain is damaged; `guard` adds which file system and path."""


class _CheckedPyFat(PyFat):  # type: ignore[misc]
    """PyFat whose cluster chains stay inside the volume and end: a damaged FAT may loop."""

    def __init__(self, layout: _FatLayout) -> None:
        super().__init__(encoding="ibm437", offset=0, lazy_load=True)
        self.layout = layout

    def get_cluster_chain(self, first_cluster: int) -> Iterator[int]:
        # pyfatfs follows chains itself only for directories: at most 65536 entries of 32 bytes.
        return self.chain(first_cluster, -(-(65536 * 32) // self.layout.cluster), strict=True)

    def chain(self, first: int, limit: int, strict: bool) -> Iterator[int]:
        """Clusters from `first`, at most `limit` (more raises when `strict`), none twice."""
        last, seen = self.layout.clusters + 1, set[int]()
        for cluster in PyFat.get_cluster_chain(self, first):
            if len(seen) >= limit:
                if strict:
                    raise _ChainError(f"the cluster chain from cluster {first} is too long")
                return
            if not 2 <= cluster <= last:
                raise _ChainError(
                    f"the cluster chain reaches cluster {cluster}, outside the volume"
                )
            if cluster in seen:
                raise _ChainError(
                    f"the cluster chain from cluster {first} repeats cluster {cluster}"
                )
            seen.add(cluster)
            yield cluster


class _FatFileSystem(_TreeFileSystem):
    def __init__(self, view: DiskView, layout: _FatLayout, where: str) -> None:
        super().__init__(view, where)
        self.kind, self.layout = layout.kind, layout
        self._fat = _CheckedPyFat(layout)
        with self.guard("its allocation table"), pywarnings.catch_warnings(record=True) as said:
            pywarnings.simplefilter("always")
            self._fat.set_fp(view)
        for warning in said:
            self.warn(f"{self.kind} in {where}: {warning.message}")

    def _matches(self, stored: str, wanted: str) -> bool:
        return posixpath.basename(stored).casefold() == wanted.casefold()

    def _entry(self, path: str, node: Any) -> ImageEntry:
        if node.is_directory():
            return ImageEntry(path, "dir", 0, 0o755, _fat_time(node))
        mode = 0o444 if node.is_read_only() else 0o644
        return ImageEntry(path, "file", int(node.filesize), mode, _fat_time(node))

    def _root(self) -> tuple[ImageEntry, Any]:
        return ImageEntry("/", "dir", 0, 0o755, 0.0), self._fat.root_dir

    def _children(self, entry: ImageEntry, node: Any) -> list[tuple[str, ImageEntry, Any]]:
        with self.guard(entry.path):
            dirs, files, _specials = node.get_entries()
            named = [(_fat_name(sub), sub) for sub in dirs + files]
            return [(name, self._entry(_join(entry.path, name), sub), sub) for name, sub in named]

    def _key(self, node: Any) -> int:
        return int(node.get_cluster())

    def _reader(self, entry: ImageEntry, node: Any) -> io.RawIOBase:
        first = int(node.get_cluster())
        need = -(-entry.size // self.layout.cluster)
        chain = self._fat.chain(first, need, strict=False) if first else iter(())
        return _FileReader(self, entry, _ClusterFetch(self.view, self.layout, chain))


class _ClusterFetch:
    """Bytes of a file from its (lazily followed) cluster chain, one contiguous run per call."""

    def __init__(self, view: DiskView, layout: _FatLayout, chain: Iterator[int]) -> None:
        self._view, self._layout, self._chain = view, layout, chain
        self._clusters: list[int] = []

    def _cluster(self, index: int) -> int | None:
        while len(self._clusters) <= index:
            nxt = next(self._chain, None)
            if nxt is None:
                return None
            self._clusters.append(nxt)
        return self._clusters[index]

    def __call__(self, offset: int, size: int) -> bytes:
        span = self._layout.cluster
        index, skip = divmod(offset, span)
        first = self._cluster(index)
        if first is None:
            return b""
        count, last = 1, (offset + size - 1) // span
        while index + count <= last and self._cluster(index + count) == first + count:
            count += 1
        start = self._layout.first_data + (first - 2) * span + skip
        return self._view.pread(start, min(size, count * span - skip))


def _fat_name(node: Any) -> str:
    """The long name, else the 8.3 name with the NT lower-case flags Linux and Windows honour."""
    if node.lfn_entry is not None:
        return str(node.get_long_name())
    base, _, ext = str(node.get_short_name()).partition(".")
    base = base.lower() if node.ntres & 0x08 else base
    ext = ext.lower() if node.ntres & 0x10 else ext
    return f"{base}.{ext}" if ext else base


def _fat_time(node: Any) -> float:
    """FAT stores local time without a zone: read it as local time, as mtools and Windows do."""
    try:
        return float(node.get_mtime().timestamp())
    except (ValueError, OverflowError, OSError):
        return 0.0  # an impossible date (zeros): unknown


# --- extract ---------------------------------------------------------------------------


def extract(fs: ImageFileSystem, path: str, target_dir: str) -> int:
    """Restore a file, symlink or directory tree of `fs` into `target_dir`; returns file bytes.

    `/a/b` lands at `target_dir/b`, "/" fills `target_dir` itself. Contents are
    streamed, runs of zeros become holes, and modes and mtimes (and owners when
    run as root) are set, on directories after their contents. Existing files
    are replaced; a symlink in the way is removed, never followed. Other types
    (devices, fifos) are skipped and noted in `fs.warnings`.
    """
    top = fs.stat(path)
    os.makedirs(target_dir, exist_ok=True)
    root = target_dir if top.path == "/" else os.path.join(target_dir, posixpath.basename(top.path))
    written, dirs = 0, []
    entries = fs.walk(top.path) if top.type == "dir" else iter(())
    for entry in _with_first(top, entries):
        relative = entry.path[len(top.path) :].lstrip("/")
        dest = os.path.join(root, *relative.split("/")) if relative else root
        if entry.type == "dir":
            if dest != target_dir:
                _make_dir(dest)
                dirs.append((dest, entry))
        elif entry.type == "file":
            written += _write_file(fs, entry, dest)
        elif entry.type == "symlink" and entry.target:
            _clear(dest)
            os.symlink(entry.target, dest)
            _set_meta(dest, entry)
        else:
            fs.warnings.append(f"not restored: {entry.path} ({entry.type})")
    for dest, entry in reversed(dirs):
        _set_meta(dest, entry)
    return written


def _with_first(first: ImageEntry, rest: Iterator[ImageEntry]) -> Iterator[ImageEntry]:
    yield first
    yield from rest


def _clear(dest: str) -> None:
    """Remove what is at `dest` unless it is a real directory (a symlink is never followed)."""
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a directory is in the way", dest)
    os.unlink(dest)


def _make_dir(dest: str) -> None:
    try:
        if stat.S_ISDIR(os.lstat(dest).st_mode):
            return
        os.unlink(dest)
    except FileNotFoundError:
        pass
    os.mkdir(dest, 0o700)


def _write_file(fs: ImageFileSystem, entry: ImageEntry, dest: str) -> int:
    _clear(dest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with fs.open(entry.path) as source, open(os.open(dest, flags, 0o600), "wb") as out:
        try:
            while chunk := source.read(_COPY_CHUNK):
                view = memoryview(chunk)
                for start in range(0, len(view), _HOLE_CHUNK):
                    piece = view[start : start + _HOLE_CHUNK]
                    if piece.tobytes().count(0) == len(piece):
                        out.seek(len(piece), io.SEEK_CUR)
                    else:
                        out.write(piece)
            out.truncate(entry.size)
        except BaseException:
            os.unlink(dest)  # no half-restored file that looks whole
            raise
    _set_meta(dest, entry)
    return entry.size


def _set_meta(dest: str, entry: ImageEntry) -> None:
    link = entry.type == "symlink"
    if os.geteuid() == 0:
        os.chown(dest, entry.uid, entry.gid, follow_symlinks=False)
    if not link:
        os.chmod(dest, entry.mode)
    ns = round(entry.mtime * 1e9)
    os.utime(dest, ns=(ns, ns), follow_symlinks=False)
