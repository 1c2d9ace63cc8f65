"""Reading an uncompressed qcow2 (or raw) chain's guest bytes straight from its files.

`qemu-img map` says where each guest extent lies; `HostMap` preads it there.
Only valid while nothing writes the image (the private qemu-nbd that serves it
holds qemu's image lock).
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass

from strongroom.errors import SourceError
from strongroom.sources.qemu_img import QEMU_IMG, ImageInfo, image_args, need_tool, run_tool


@dataclass(frozen=True)
class HostExtent:
    start: int
    length: int
    zero: bool
    depth: int  # 0: the image file itself, 1: its backing file, ...
    offset: int  # in that file (data extents)


class HostMap:
    """Where each guest byte of an uncompressed qcow2 (or raw) chain lies in its files.

    `qemu-img map` reports, for every extent, whether it reads as zeros or
    where in which file of the backing chain its bytes are stored as they are.
    Reading those bytes with pread skips qemu-nbd and the NBD copy for the
    bulk of a backup; metadata (allocation, dirty bitmaps) still comes over
    NBD. Only valid while nothing writes the image: the private qemu-nbd that
    serves it holds qemu's image lock, which keeps writers out."""

    def __init__(self, extents: list[HostExtent], files: list[str]) -> None:
        self.extents = extents
        self.starts = [e.start for e in extents]
        self._fds = [os.open(f, os.O_RDONLY | os.O_CLOEXEC) for f in files]

    @classmethod
    def load(cls, info: ImageInfo) -> HostMap | None:
        """The map, or None when some data is not stored plainly (compressed clusters)."""
        if not info.plain_clusters or (info.backing and not info.chain):
            return None
        if not all(below.plain for below in info.chain):
            return None
        files = [info.path, *(below.path for below in info.chain)]
        out = run_tool(
            [
                need_tool(QEMU_IMG),
                "map",
                "-U",
                "--output=json",
                *image_args(info.path, info.format, info.follow),
            ],
            f"{info.path}: cannot map",
        )
        extents = []
        for e in json.loads(out):
            zero = bool(e.get("zero")) or not e.get("data")
            if not zero and ("offset" not in e or int(e.get("depth", 0)) >= len(files)):
                return None  # compressed, or in a file we did not expect
            extents.append(
                HostExtent(
                    int(e["start"]),
                    int(e["length"]),
                    zero,
                    int(e.get("depth", 0)),
                    int(e.get("offset", 0)),
                )
            )
        return cls(extents, files)

    def read(self, offset: int, length: int) -> tuple[bytearray, int]:
        """The guest bytes [offset, offset+length), and how many came from files."""
        buf = bytearray(length)
        view = memoryview(buf)
        got = 0
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        pos, end = offset, offset + length
        while pos < end and i < len(self.extents):
            ext = self.extents[i]
            stop = min(end, ext.start + ext.length)
            if stop > pos and not ext.zero:
                piece = view[pos - offset : stop - offset]
                n = os.preadv(self._fds[ext.depth], [piece], ext.offset + (pos - ext.start))
                if n != len(piece):
                    raise SourceError(f"image file ended early at guest offset {pos}")
                got += n
            pos = max(pos, stop)
            i += 1
        return buf, got

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
