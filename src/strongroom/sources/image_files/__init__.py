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

One module an idea: `view` (the disk window and its cache), `detect` (naming
a file system by its magic), `opening` (partition choice), `tree` (list,
stat, walk and open, shared), `ext` and `fat` (the two library adapters),
`extracting` (restoring to local disk); `entry` and `errors` are what callers see.
"""

from strongroom.sources.image_files.detect import MAX_FAT_BYTES, SUPPORTED
from strongroom.sources.image_files.entry import ImageEntry, ImageFileSystem
from strongroom.sources.image_files.errors import (
    ImageFileSystemError,
    ImageReadError,
    UnsupportedFileSystem,
)
from strongroom.sources.image_files.extracting import extract
from strongroom.sources.image_files.opening import open_filesystem
from strongroom.sources.image_files.tree import MAX_WARNINGS
from strongroom.sources.image_files.view import DiskView, SeekableReader

__all__ = [
    "MAX_FAT_BYTES",
    "MAX_WARNINGS",
    "SUPPORTED",
    "DiskView",
    "ImageEntry",
    "ImageFileSystem",
    "ImageFileSystemError",
    "ImageReadError",
    "SeekableReader",
    "UnsupportedFileSystem",
    "extract",
    "open_filesystem",
]
