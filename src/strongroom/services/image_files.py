"""Files inside a block image point, read without restoring the image.

The file-system readers (sources/image_files/) see the point as a seekable
file; only the blocks they touch are fetched from the repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.image_reader import PointReader
from strongroom.repository.store import ChunkStore
from strongroom.services.image_restore import point_map
from strongroom.sources.image_files import ImageFileSystem, extract, open_filesystem

__all__ = ["extract", "open_image_filesystem"]


@contextmanager
def open_image_filesystem(
    repo: ChunkStore, point: RecoveryPoint, partition: int | None = None
) -> Iterator[ImageFileSystem]:
    reader = PointReader(repo, point_map(repo, point), cache_bytes=64 << 20, readahead=2)
    try:
        yield open_filesystem(reader.stream(), partition)
    finally:
        reader.close()
