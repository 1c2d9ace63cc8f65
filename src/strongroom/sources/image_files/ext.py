"""ext2/3/4 through libfsext (`pyfsext`): block maps, extents, htree and inline data alike."""

from __future__ import annotations

import io
import stat
from typing import Any

import pyfsext  # type: ignore[import-not-found, import-untyped, unused-ignore]

from strongroom.sources.image_files.detect import Probe
from strongroom.sources.image_files.entry import ImageEntry
from strongroom.sources.image_files.errors import ImageFileSystemError
from strongroom.sources.image_files.tree import FileReader, TreeFileSystem, join_path, split_path
from strongroom.sources.image_files.view import DiskView

_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}


class ExtFileSystem(TreeFileSystem):
    def __init__(self, view: DiskView, found: Probe, where: str) -> None:
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
                return name, self._entry(join_path(entry.path, name), sub), sub

            kid = self.soft(f"entry {index} of {entry.path}", child, None)
            if kid is not None:
                kids.append(kid)
        return kids

    def _lookup(self, path: str) -> tuple[ImageEntry, Any]:
        """libfsext's own lookup first; the generic walk only to explain a failure."""
        normal = "/" + "/".join(split_path(path))
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

        return FileReader(self, entry, fetch)
