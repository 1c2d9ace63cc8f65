"""A VHD (fixed, dynamic or differencing, with its parent chain) as a block source.

qemu's `vpc` driver opens a differencing VHD as a standalone disk and ignores
its parent, so strongroom reads VHDs itself, through `formats.vhd`: the whole
chain is validated on open, unallocated ranges of the chain are holes (zeros,
never read), and reads fall through to the parents where the child has no data.

A differencing disk's parent locators are names a guest may have written
(a raw disk whose last sector is a VHD footer is a VHD to a probe), so a
parent is followed only when it lies, every symlink resolved, in the child's
own folder, unless the user allowed any place (`--allow-backing`); the
parent's unique id must match what the child records in either case.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path

from strongroom.errors import SourceError
from strongroom.formats.vhd import (
    ParentRef,
    ParentResolver,
    VhdError,
    default_parent_resolver,
    open_vhd,
    read_footer,
)
from strongroom.sources.block import Data, Extent

COOKIE = b"conectix"
FOOTER_SIZE = 512


def looks_like_vhd(path: str | os.PathLike[str]) -> bool:
    """True if the file at `path` carries a VHD footer at its end (any type) or
    a footer copy at its start (dynamic, differencing: also when truncated).

    A damaged footer whose cookie is intact still counts, so that opening the file
    reports the damage instead of backing the file up as something else.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < FOOTER_SIZE:
                return False
            head = os.pread(f.fileno(), len(COOKIE), 0)
            tail = os.pread(f.fileno(), len(COOKIE), size - FOOTER_SIZE)
    except OSError:
        return False
    if head == COOKIE:
        return True
    if tail != COOKIE:
        return False
    try:
        read_footer(path)
    except VhdError:
        pass  # the cookie is there: open_vhd says what is wrong
    return True


class ConfinedParents:
    """A `ParentResolver` that finds a parent as `default_parent_resolver` does,
    then refuses one outside the child's real folder unless `anywhere`; the
    real paths of the parents found are kept in `followed`."""

    def __init__(self, anywhere: bool = False, resolve: ParentResolver = default_parent_resolver):
        self.anywhere = anywhere
        self.followed: list[str] = []
        self._resolve = resolve

    def __call__(self, child: Path, ref: ParentRef) -> Path:
        found = self._resolve(child, ref)
        real = os.path.realpath(found)
        folder = os.path.dirname(os.path.realpath(child))
        if not self.anywhere and os.path.dirname(real) != folder:
            raise ParentOutsideFolder(
                f"{child} names its parent VHD at {found}"
                + (f" ({real})" if real != str(found) else "")
                + ", outside its own folder: strongroom follows it only when told:"
                " --allow-backing to read it too, or --format raw to back up the file's own bytes"
            )
        self.followed.append(real)
        return Path(real)


class ParentOutsideFolder(VhdError):
    """A differencing VHD's parent lies outside its folder and was not allowed."""


class VhdSource:
    """A VHD file and its parents, read with `formats.vhd.VhdReader`.

    `allocation()` reports the ranges allocated in no file of the chain as zero
    (block granularity: an allocated extent may still hold zeros). `bytes_read`
    counts the requested bytes that lie in allocated ranges, i.e. what was read
    from the files; holes cost nothing. Raises `VhdError` (a `SourceError`) on open
    for any damage, a missing parent, or a parent whose id differs.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        parent_resolver: ParentResolver | None = None,
        *,
        follow_anywhere: bool = False,
    ) -> None:
        """`parent_resolver` None: `ConfinedParents(follow_anywhere)`; the real
        paths of the parents read are in `followed` after opening."""
        self.description = os.path.abspath(path)
        confined = ConfinedParents(follow_anywhere)
        self._reader = open_vhd(path, parent_resolver or confined)
        self.followed = confined.followed
        self.size = self._reader.size
        self.kind = self._reader.kind
        self.bytes_read = 0
        self._extents: list[Extent] | None = None
        self._starts: list[int] = []

    def _allocation_map(self) -> list[Extent]:
        if self._extents is None:
            self._extents = [
                Extent(e.offset, e.length, zero=not e.allocated) for e in self._reader.extents()
            ]
            self._starts = [e.offset for e in self._extents]
        return self._extents

    def allocation(self) -> Iterator[Extent]:
        """Consecutive extents covering [0, size); `zero` where no file of the chain has data."""
        yield from self._allocation_map()

    def _allocated_bytes(self, offset: int, length: int) -> int:
        extents = self._allocation_map()
        end = offset + length
        i = max(bisect_right(self._starts, offset) - 1, 0)
        total = 0
        while i < len(extents) and extents[i].offset < end:
            e = extents[i]
            if not e.zero:
                total += max(0, min(e.end, end) - max(e.offset, offset))
            i += 1
        return total

    def read_blocks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Data]]:
        """Read (offset, length) ranges inside the disk; yields (offset, bytearray) in order.

        Raises `SourceError` for a range past the disk's end and `VhdError` naming
        the offset when a file of the chain cannot be read."""
        for offset, length in ranges:
            if offset < 0 or length < 0 or offset + length > self.size:
                raise SourceError(
                    f"{self.description}: read of {length} bytes at offset {offset}"
                    f" beyond the disk's {self.size} bytes"
                )
            try:
                data = self._reader.read(offset, length)
            except VhdError as err:
                raise VhdError(f"{err} (reading offset {offset})") from None
            except OSError as err:
                raise SourceError(
                    f"{self.description}: read error at offset {offset}: {err.strerror or err}"
                ) from None
            if len(data) != length:
                raise VhdError(f"{self.description}: short read at offset {offset}")
            self.bytes_read += self._allocated_bytes(offset, length)
            yield offset, bytearray(data)

    def close(self) -> None:
        """Close every file of the chain; idempotent."""
        self._reader.close()
