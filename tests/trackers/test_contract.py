"""Every change tracker runs `TrackerContract` on real disks: dirty bitmaps of
a qcow2 file (qemu-img, read through qemu-nbd) and of a running block layer
(qemu-storage-daemon over QMP), a qcow2 overlay's allocation, and the
comparison of raw files."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strongroom.model.lineage import BlockLineage
from strongroom.sources.block import RawSource
from strongroom.sources.images import OpenRules, probe_image
from strongroom.sources.live import LiveDisk
from strongroom.sources.qemu import QemuImageSource
from strongroom.sources.qemu_img import OfflineBitmaps, backing_chain_identity, file_identity
from strongroom.sources.qmp import QmpClient
from strongroom.trackers.base import ChangeTracker
from strongroom.trackers.bitmaps import BitmapTracker, plan_bitmaps
from strongroom.trackers.compare import CompareTracker, record
from strongroom.trackers.overlay import OverlayTracker
from strongroom.trackers.testing import MiB, TrackerContract
from tests.helpers.block_servers import StorageDaemon
from tests.helpers.images import QEMU, needs, qemu_io, run

PREFIX = "strongroom-test"


def _fill(path: Path, size: int) -> None:
    """A qcow2 disk of `size` holding data everywhere (so zeros are a change)."""
    run("qemu-img", "create", "-q", "-f", "qcow2", path, size)
    qemu_io(path, f"write -P 0x5a 0 {size}")


@dataclass
class _Image:
    path: Path
    bitmap: str = f"{PREFIX}.parent"
    extra: dict[str, object] = field(default_factory=dict)


@QEMU
class TestOfflineBitmaps(TrackerContract):
    """`backup --image disk.qcow2`: bitmaps started with qemu-img, read through qemu-nbd."""

    def start(self, tmp: Path) -> _Image:
        disk = _Image(tmp / "disk.qcow2")
        _fill(disk.path, self.disk_size)
        OfflineBitmaps(str(disk.path)).checkpoint(disk.bitmap, self.granularity, [])
        return disk

    def write(self, disk: _Image, offset: int, length: int, byte: int) -> None:
        qemu_io(disk.path, f"write -P {byte} {offset} {length}")

    @contextmanager
    def tracker(self, disk: _Image) -> Iterator[ChangeTracker]:
        info = probe_image(str(disk.path))
        plan = plan_bitmaps(info.bitmaps, PREFIX, disk.bitmap)
        with closing(QemuImageSource(info, plan.read or [])) as view:
            yield BitmapTracker.from_plan(view, plan)

    def lose(self, disk: _Image) -> None:
        OfflineBitmaps(str(disk.path)).remove([disk.bitmap])


@needs("qemu-storage-daemon", "qemu-img", "qemu-io")
class TestLiveBitmaps(TrackerContract):
    """`backup --image URI --qmp`: a persistent bitmap of a running block
    layer, read through the frozen view strongroom exports."""

    @pytest.fixture(autouse=True)
    def _daemons(self) -> Iterator[None]:
        self.daemons: list[StorageDaemon] = []
        yield
        for daemon in self.daemons:
            daemon.stop()

    def start(self, tmp: Path) -> _Image:
        disk = _Image(tmp / "disk.qcow2")
        _fill(disk.path, self.disk_size)
        daemon = StorageDaemon(disk.path, tmp / "qsd").start()
        self.daemons.append(daemon)
        disk.extra.update(daemon=daemon, scratch=tmp / "scratch")
        os.makedirs(tmp / "scratch")
        with daemon.control() as qmp:
            qmp.execute(
                "block-dirty-bitmap-add",
                {
                    "node": daemon.NODE,
                    "name": disk.bitmap,
                    "granularity": self.granularity,
                    "persistent": True,
                },
            )
        return disk

    def _daemon(self, disk: _Image) -> StorageDaemon:
        daemon = disk.extra["daemon"]
        assert isinstance(daemon, StorageDaemon)
        return daemon

    def write(self, disk: _Image, offset: int, length: int, byte: int) -> None:
        self._daemon(disk).write(f"write -P {byte} {offset} {length}")

    @contextmanager
    def tracker(self, disk: _Image) -> Iterator[ChangeTracker]:
        daemon = self._daemon(disk)
        with QmpClient(str(daemon.qmp)) as qmp:
            live = LiveDisk(qmp, daemon.NODE, daemon.nbd_uri, str(disk.extra["scratch"]))
            plan = plan_bitmaps(live.bitmaps(), PREFIX, disk.bitmap)
            try:
                view = live.open_view(plan.add, self.granularity, plan.disable, plan.read or [])
                with closing(view):
                    yield BitmapTracker.from_plan(view, plan)
            finally:
                live.close_view()

    def lose(self, disk: _Image) -> None:
        daemon = self._daemon(disk)
        with daemon.control() as qmp:
            qmp.execute("block-dirty-bitmap-remove", {"node": daemon.NODE, "name": disk.bitmap})


@QEMU
class TestOverlay(TrackerContract):
    """A qcow2 overlay put on the image the parent point read."""

    def start(self, tmp: Path) -> _Image:
        base = tmp / "base.qcow2"
        _fill(base, self.disk_size)
        top = _Image(tmp / "top.qcow2")
        # What the parent point recorded, after reading base.qcow2.
        top.extra["base"] = base
        top.extra["lineage"] = BlockLineage(
            tracker="full", image_format="qcow2", image_identity=file_identity(str(base))
        )
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top.path)
        return top

    def write(self, disk: _Image, offset: int, length: int, byte: int) -> None:
        qemu_io(disk.path, f"write -P {byte} {offset} {length}")

    @contextmanager
    def tracker(self, disk: _Image) -> Iterator[ChangeTracker]:
        info = probe_image(str(disk.path), rules=OpenRules(allow_backing=True))
        lineage = disk.extra["lineage"]
        assert isinstance(lineage, BlockLineage)
        with closing(QemuImageSource(info, allocation_depth=True)) as view:
            below = backing_chain_identity(info)
            yield OverlayTracker(view, info.path, info.backing, below, lineage)

    def lose(self, disk: _Image) -> None:
        time.sleep(0.01)  # the identity holds the modification time to the nanosecond
        qemu_io(disk.extra["base"], "write -P 1 65536 4096")


class TestCompare(TrackerContract):
    """The fallback itself: raw files compared block by block with their state."""

    granularity = 64 * 1024
    loses_state = False  # the state is the recorded digests, which nothing outside holds

    def start(self, tmp: Path) -> _Image:
        disk = _Image(tmp / "disk.raw")
        disk.path.write_bytes(random.Random(5).randbytes(self.disk_size))
        with closing(RawSource(str(disk.path))) as source:
            disk.extra["digests"] = record(source, self.granularity)
        return disk

    def write(self, disk: _Image, offset: int, length: int, byte: int) -> None:
        fd = os.open(disk.path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes([byte]) * length, offset)
        finally:
            os.close(fd)

    @contextmanager
    def tracker(self, disk: _Image) -> Iterator[ChangeTracker]:
        digests = disk.extra["digests"]
        assert isinstance(digests, list)
        with closing(RawSource(str(disk.path))) as source:
            yield CompareTracker(source, self.granularity, digests)


class TestCompareOddSize(TestCompare):
    """A disk whose size is not a multiple of the block size: the last extent
    ends at the disk's end."""

    disk_size = 3 * MiB + 512
