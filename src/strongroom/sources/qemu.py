"""Disk images that qemu reads, as a block source.

An image file that is not raw (qcow2, vmdk, vhdx, ...) is served by a private
`qemu-nbd` on a unix socket in a temporary directory and read over NBD; that
same child exposes the image's persistent dirty bitmaps (`-B`) and the
allocation depth of its top layer (`-A`) for the change trackers. Plainly
stored data is read from the image's files directly (`HostMap`).

The parts: probing and offline bitmaps with qemu-img (`sources/qemu_img.py`),
the qemu-nbd child (`sources/qemu_nbd.py`), the host map
(`sources/host_map.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from strongroom.errors import SourceError
from strongroom.sources.block import Data, NbdSource
from strongroom.sources.host_map import HostMap
from strongroom.sources.qemu_img import ImageInfo
from strongroom.sources.qemu_nbd import QemuNbdChild


class QemuImageSource(NbdSource):
    """An image file in any format qemu reads, through a private qemu-nbd."""

    def __init__(
        self,
        info: ImageInfo,
        bitmaps: Sequence[str] = (),
        allocation_depth: bool = False,
    ) -> None:
        self.info = info
        self.child = QemuNbdChild(
            info.path, info.format, bitmaps, allocation_depth, follow=info.follow
        )
        contexts = [f"qemu:dirty-bitmap:{b}" for b in bitmaps]
        if allocation_depth:
            contexts.append("qemu:allocation-depth")
        try:
            super().__init__(self.child.uri, contexts, description=info.path)
            # Mapped while qemu-nbd holds the image: nobody writes meanwhile.
            self.host_map = HostMap.load(info)
        except SourceError:
            why = self.child.failure()
            self.child.close()
            if why is not None:
                raise SourceError(f"{info.path}: qemu-nbd failed: {why}") from None
            raise
        except BaseException:
            self.child.close()
            raise
        self._direct = 0

    @property
    def bytes_read(self) -> int:
        return super().bytes_read + self._direct

    def read_blocks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Data]]:
        host_map = self.host_map
        if host_map is None:
            yield from super().read_blocks(ranges)
            return
        for offset, length in ranges:
            try:
                data, got = host_map.read(offset, length)
            except OSError as err:
                raise SourceError(
                    f"{self.description}: read error at offset {offset}: {err.strerror}"
                ) from None
            self._direct += got
            yield offset, data

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.host_map is not None:
                self.host_map.close()
            self.child.close()
