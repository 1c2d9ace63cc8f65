"""What a file system inside an image offers: its entries and the read-only protocol."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from strongroom.model.tree import DIR, FILE, SYMLINK

_NODE_TYPES = {"file": FILE, "dir": DIR, "symlink": SYMLINK}


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

    @property
    def node_type(self) -> str:
        """The entry's type as a tree node's (model/tree.py): "other" reads as a file."""
        return _NODE_TYPES.get(self.type, FILE)


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
