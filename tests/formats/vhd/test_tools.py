"""VHDs we write, judged by independent implementations: qemu-img and libvhdi.

qemu opens a differencing VHD as a standalone disk, so only libvhdi judges a chain.

libvhdi (20260901 and older) misreads a differencing block's sector bitmap when a
bitmap byte has a set bit followed by clear bits: it takes the sectors after the
last set bit of that byte from the child instead of the parent. Our files follow
the spec (and MiniVHD, VirtualBox): bit 7 of byte 0 is sector 0. So the chain
tests that libvhdi judges write 4 KiB-aligned extents (whole bitmap bytes); the
sector-sized case is recorded as an expected failure of libvhdi.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from strongroom.formats.vhd import open_vhd
from tests.formats.vhd.disks import (
    BASE,
    CHILD,
    GRANDCHILD,
    SIZE,
    KiB,
    MiB,
    expected,
    need,
    noise,
    run,
    write,
    write_child,
)
from tests.helpers.libvhdi import open_chain


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_qemu_reads_fixed_and_dynamic(tmp_path: Path, kind: str) -> None:
    need("qemu-img")
    vhd, raw = tmp_path / "d.vhd", tmp_path / "d.raw"
    write(vhd, SIZE, BASE, kind=kind)
    raw.write_bytes(expected(BASE))
    info = run("qemu-img", "info", "-f", "vpc", vhd)
    assert f"({SIZE} bytes)" in info
    run("qemu-img", "compare", "-f", "vpc", "-F", "raw", vhd, raw)


def test_qemu_maps_only_the_blocks_a_differencing_disk_holds(tmp_path: Path) -> None:
    need("qemu-img")
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    out = run("qemu-img", "map", "--output=json", "-f", "vpc", tmp_path / "child.vhd")
    starts = [int(m.group(1)) for m in re.finditer(r'"start": (\d+), [^}]*"data": true', out)]
    assert starts == [0, 2 * MiB, 4 * MiB, 6 * MiB, 8 * MiB]


def test_vhdiinfo_reads_all_three_kinds(tmp_path: Path) -> None:
    need("vhdiinfo")
    fixed = write(tmp_path / "fixed.vhd", SIZE, BASE, kind="fixed")
    base = write(tmp_path / "base.vhd", SIZE, BASE)
    child = write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    for name, info, kind in [
        ("fixed.vhd", fixed, "Fixed"),
        ("base.vhd", base, "Dynamic"),
        ("child.vhd", child, "Differential"),
    ]:
        out = run("vhdiinfo", tmp_path / name)
        assert re.search(rf"Disk type\s*: {kind}", out), out
        assert f"({SIZE} bytes)" in out
        assert re.search(rf"Identifier\s*: {info.uuid}", out)
    out = run("vhdiinfo", tmp_path / "child.vhd")
    assert re.search(rf"Parent identifier\s*: {base.uuid}", out)
    assert re.search(r"Parent filename\s*: base.vhd", out)


def test_libvhdi_reads_a_chain_byte_for_byte(tmp_path: Path) -> None:
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    more = [(0, noise(10, 4 * KiB)), (3 * MiB + 8 * KiB, noise(11, 12 * KiB))]
    write_child(tmp_path / "gc.vhd", tmp_path / "child.vhd", SIZE, more)
    with open_chain([tmp_path / "base.vhd", tmp_path / "child.vhd"]) as child:
        assert child.get_media_size() == SIZE
        assert child.read_buffer_at_offset(SIZE, 0) == expected(BASE, CHILD)
    chain = [tmp_path / "base.vhd", tmp_path / "child.vhd", tmp_path / "gc.vhd"]
    with open_chain(chain) as gc:
        assert gc.read_buffer_at_offset(SIZE, 0) == expected(BASE, CHILD, more)


def test_libvhdi_refuses_a_parent_with_another_id(tmp_path: Path) -> None:
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    write(tmp_path / "other.vhd", SIZE, BASE)
    with pytest.raises(OSError), open_chain([tmp_path / "other.vhd", tmp_path / "child.vhd"]):
        pass


@pytest.mark.xfail(strict=True, reason="libvhdi misreads partial sector-bitmap bytes")
def test_libvhdi_sector_sized_writes(tmp_path: Path) -> None:
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "gc.vhd", tmp_path / "base.vhd", SIZE, GRANDCHILD)
    with open_vhd(tmp_path / "gc.vhd") as ours:  # ours is right...
        assert ours.read(0, SIZE) == expected(BASE, GRANDCHILD)
    with open_chain([tmp_path / "base.vhd", tmp_path / "gc.vhd"]) as gc:
        assert gc.read_buffer_at_offset(SIZE, 0) == expected(BASE, GRANDCHILD)
