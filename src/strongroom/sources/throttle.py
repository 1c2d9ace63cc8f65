"""`--limit-read`: a block source whose reads are held to a rate.

Wraps any `BlockSource` (an image file, a device, an NBD export, a VM's
frozen view): each block `read_blocks` yields is taken from one
`TokenBucket` before the next is asked for, so the source (and the block
layer behind it: a VM's qemu serving the backup's reads on the I/O thread
its guest writes through) sees at most the rate. Zero and hole extents cost
nothing: they are never read. The rest of the source passes through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from strongroom.bandwidth import TokenBucket
from strongroom.sources.block import BlockSource, Data, Extent


class ThrottledSource:
    """`inner` read at most at `bucket`'s rate."""

    def __init__(self, inner: BlockSource, bucket: TokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket
        self.description = inner.description
        self.size = inner.size

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read

    def allocation(self) -> Iterator[Extent]:
        return self.inner.allocation()

    def read_blocks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Data]]:
        for offset, data in self.inner.read_blocks(ranges):
            self.bucket.take(len(data))
            yield offset, data

    def close(self) -> None:
        self.inner.close()


def read_limited(source: BlockSource, bucket: TokenBucket | None) -> BlockSource:
    """`source` itself without a limit, else held to `bucket`."""
    return source if bucket is None else ThrottledSource(source, bucket)
