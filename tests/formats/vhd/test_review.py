"""Regressions from the review of the VHD reader."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

from strongroom.formats.vhd import VhdError, open_vhd
from tests.formats.vhd.disks import noise, write, write_child

MiB = 1 << 20


def test_a_clear_bit_in_a_dynamic_disks_sector_bitmap_reads_as_zeros(tmp_path: Path) -> None:
    disk = tmp_path / "d.vhd"
    data = noise(1, 2 * MiB)
    write(disk, 4 * MiB, [(0, data)], kind="dynamic")
    with open_vhd(disk) as r:
        assert r.read(0, 2 * MiB) == data
        block0 = r._bat[0] * 512  # the block's sector bitmap
    raw = bytearray(disk.read_bytes())
    raw[block0] &= 0x7F  # sector 0: not in the disk any more (Hyper-V reads zeros)
    disk.write_bytes(bytes(raw))
    with open_vhd(disk) as r:
        got = r.read(0, 2 * MiB)
    assert got[:512] == bytes(512) and got[512:] == data[512:]


def test_a_parent_of_another_size_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.vhd"
    write(base, 4 * MiB, [(0, noise(2, MiB))], kind="dynamic")
    child = tmp_path / "child.vhd"
    write_child(child, base, 4 * MiB, [(MiB, noise(3, MiB))])
    other = tmp_path / "other.vhd"
    write(other, 8 * MiB, [(0, noise(2, MiB))], kind="dynamic")
    # Give the bigger disk the base's identity, then put it in the base's place.
    with open_vhd(base) as r:
        ident = r.uuid.bytes
    raw = bytearray(other.read_bytes())
    for at in (0, len(raw) - 512):  # both footer copies: id at 68, checksum at 64
        raw[at + 68 : at + 84] = ident
        raw[at + 64 : at + 68] = b"\0\0\0\0"
        checksum = (~sum(raw[at : at + 512])) & 0xFFFFFFFF
        raw[at + 64 : at + 68] = struct.pack(">I", checksum)
    base.write_bytes(bytes(raw))
    with pytest.raises(VhdError, match="cannot change size"):
        open_vhd(child).close()


def test_checking_a_large_table_costs_bytes_per_entry_not_objects(tmp_path: Path) -> None:
    disk = tmp_path / "d.vhd"
    write(disk, 1024 * MiB, [(i * 2 * MiB, noise(i, 4096)) for i in range(512)], kind="dynamic")
    tracemalloc.start()
    with open_vhd(disk):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MiB
