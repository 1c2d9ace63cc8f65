"""Opening a disk image's file system: which partition, then which library."""

from __future__ import annotations

import io

from strongroom.formats.partitions import Partition, PartitionTableError, read_partitions
from strongroom.sources.image_files.detect import SUPPORTED, Probe, probe
from strongroom.sources.image_files.entry import ImageFileSystem
from strongroom.sources.image_files.errors import ImageFileSystemError, UnsupportedFileSystem
from strongroom.sources.image_files.ext import ExtFileSystem
from strongroom.sources.image_files.fat import FatFileSystem
from strongroom.sources.image_files.view import DiskView, SeekableReader


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
        found = probe(whole)
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
        found = probe(view)
        if found.supported:
            return _open(view, found, f"partition {part.number}")
        seen.append(f"partition {part.number} holds {_describe(part, found)}")
    if partition is None:
        found = probe(whole)
        if found.supported:  # a bare file system whose boot code reads as a table
            return _open(whole, found, "the disk")
    raise UnsupportedFileSystem(f"{', '.join(seen)}; {SUPPORTED}")


def _describe(part: Partition, found: Probe) -> str:
    return found.kind or f"no known file system (partition type {part.type})"


def _open(view: DiskView, found: Probe, where: str) -> ImageFileSystem:
    if found.fat is not None:
        return FatFileSystem(view, found.fat, where)
    return ExtFileSystem(view, found, where)
