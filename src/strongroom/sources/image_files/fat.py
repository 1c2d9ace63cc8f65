"""FAT12/16/32 through the `PyFat` core of pyfatfs (without its PyFilesystem2 layer).

Cluster chains are bounded and checked here, and file bytes are read from the
disk directly, one contiguous run of clusters at a time.
"""

from __future__ import annotations

import io
import posixpath
import warnings as pywarnings
from collections.abc import Iterator
from typing import Any

from pyfatfs.PyFat import PyFat  # type: ignore[import-not-found, import-untyped, unused-ignore]

from strongroom.sources.image_files.detect import FatLayout
from strongroom.sources.image_files.entry import ImageEntry
from strongroom.sources.image_files.errors import ChainError
from strongroom.sources.image_files.tree import FileReader, TreeFileSystem, join_path
from strongroom.sources.image_files.view import DiskView


class _CheckedPyFat(PyFat):  # type: ignore[misc]
    """PyFat whose cluster chains stay inside the volume and end: a damaged FAT may loop."""

    def __init__(self, layout: FatLayout) -> None:
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
                    raise ChainError(f"the cluster chain from cluster {first} is too long")
                return
            if not 2 <= cluster <= last:
                raise ChainError(f"the cluster chain reaches cluster {cluster}, outside the volume")
            if cluster in seen:
                raise ChainError(
                    f"the cluster chain from cluster {first} repeats cluster {cluster}"
                )
            seen.add(cluster)
            yield cluster


class FatFileSystem(TreeFileSystem):
    def __init__(self, view: DiskView, layout: FatLayout, where: str) -> None:
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
            return [
                (name, self._entry(join_path(entry.path, name), sub), sub) for name, sub in named
            ]

    def _key(self, node: Any) -> int:
        return int(node.get_cluster())

    def _reader(self, entry: ImageEntry, node: Any) -> io.RawIOBase:
        first = int(node.get_cluster())
        need = -(-entry.size // self.layout.cluster)
        chain = self._fat.chain(first, need, strict=False) if first else iter(())
        return FileReader(self, entry, _ClusterFetch(self.view, self.layout, chain))


class _ClusterFetch:
    """Bytes of a file from its (lazily followed) cluster chain, one contiguous run per call."""

    def __init__(self, view: DiskView, layout: FatLayout, chain: Iterator[int]) -> None:
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
