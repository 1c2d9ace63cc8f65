"""What both file systems share: list, stat, walk and open over a library adapter's primitives.

Names are checked, directory loops cut and library errors turned into one
line here, once, so an adapter (ext.py, fat.py) only translates its library.
A name a guest wrote is one path component or its entry is skipped with a
warning (`model.names`: not empty, `.`, `..`, no `/` or NUL), and only the
first of two entries with the same name is kept, so an extraction creates
each name once and never leaves its target.
"""

from __future__ import annotations

import io
import posixpath
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, TypeVar

from strongroom.errors import PathNotFound, StrongroomError
from strongroom.model.names import name_problem, printable
from strongroom.sources.image_files.entry import ImageEntry
from strongroom.sources.image_files.errors import ChainError, ImageFileSystemError, ImageReadError
from strongroom.sources.image_files.view import DiskView, seek_position

MAX_WARNINGS = 1000
_T = TypeVar("_T")


def split_path(path: str) -> list[str]:
    return [part for part in posixpath.normpath("/" + path).split("/") if part]


def join_path(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


def _one_line(exc: BaseException) -> str:
    """A short message from a library error; libyal chains "function: text." clauses."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    short = ": ".join(c.split(": ", 1)[-1] for c in text.split(". ")[:2] if c).rstrip(".")
    return short if len(short) <= 160 else short[:157] + "..."


class TreeFileSystem(ABC):
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

    @abstractmethod
    def _root(self) -> tuple[ImageEntry, Any]:
        """The root directory's entry and node."""

    @abstractmethod
    def _children(self, entry: ImageEntry, node: Any) -> list[tuple[str, ImageEntry, Any]]:
        """A directory's children: (plain name, entry, node)."""

    @abstractmethod
    def _key(self, node: Any) -> int:
        """Identity of a directory (inode, first cluster), for loop detection."""

    @abstractmethod
    def _reader(self, entry: ImageEntry, node: Any) -> io.RawIOBase:
        """A stream of a regular file's content."""

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
        except ChainError as exc:
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
        seen: set[str] = set()
        for name, child, child_node in self._children(entry, node):
            if name_problem(name) is not None or name in seen:
                which = "a second entry" if name in seen else "an entry"
                self.warn(f"skipped {which} named '{printable(name)}' in {printable(entry.path)}")
                continue
            if child.type == "symlink" and "\0" in child.target:
                self.warn(f"skipped {printable(child.path)}: its link target holds NUL")
                continue
            seen.add(name)
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
        parts = split_path(path)
        hit = self._cached("/" + "/".join(parts))
        if hit is not None:
            return hit
        for name in parts:
            if entry.type != "dir":
                raise PathNotFound(
                    f"{join_path(entry.path, name)}: {entry.path} is not a directory"
                )
            match = [c for c in self._listing(entry, node) if self._matches(c[0].path, name)]
            if not match:
                raise PathNotFound(f"{join_path(entry.path, name)} not found in {self.where}")
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


class FileReader(io.RawIOBase):
    """`size` bytes through `fetch(offset, size)`; a file ending early is damage, not EOF."""

    def __init__(
        self, fs: TreeFileSystem, entry: ImageEntry, fetch: Callable[[int, int], bytes]
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
        self._pos = seek_position(self._pos, self._entry.size, offset, whence)
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
