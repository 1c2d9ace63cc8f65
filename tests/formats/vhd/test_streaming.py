"""Writing is streamed: memory does not grow with the disk size."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from strongroom.formats.vhd import Zeros, open_vhd, write_vhd
from strongroom.formats.vhd.writer import Data
from tests.formats.vhd.disks import MiB

GiB = 1 << 30


def _extents(size: int) -> Iterator[tuple[int, Data]]:
    """1 MiB of data every 256 MiB, explicit zeros between: 16 MiB of data in all."""
    for at in range(0, size, 256 * MiB):
        yield at, bytes([at // (256 * MiB) + 1]) * MiB
        yield at + MiB, Zeros(255 * MiB)


def test_a_4_gib_dynamic_disk_is_written_in_little_memory(tmp_path: Path) -> None:
    size = 4 * GiB
    tracemalloc.start()
    try:
        with open(tmp_path / "big.vhd", "wb") as f:
            info = write_vhd(f, size, _extents(size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, peak
    assert info.allocated_blocks == 16
    assert info.file_size < 40 * MiB
    with open_vhd(tmp_path / "big.vhd") as r:
        assert r.size == size
        assert r.read(3 * 256 * MiB, 4) == b"\4" * 4
        assert r.read(3 * 256 * MiB + MiB, 4) == bytes(4)
        assert sum(e.length for e in r.extents() if e.allocated) == 16 * 2 * MiB


def test_a_2040_gib_disk_is_accepted(tmp_path: Path) -> None:
    from strongroom.formats.vhd import MAX_SIZE

    with open(tmp_path / "max.vhd", "wb") as f:
        info = write_vhd(f, MAX_SIZE, [(MAX_SIZE - 512, b"\7" * 512)])
    with open_vhd(tmp_path / "max.vhd") as r:
        assert r.size == MAX_SIZE == info.size
        assert r.read(MAX_SIZE - 512, 512) == b"\7" * 512
