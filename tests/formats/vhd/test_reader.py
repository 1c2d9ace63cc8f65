"""Our reader: our own files, qemu's files, extents, and the parent chain."""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import pytest

from strongroom.formats.vhd import (
    ParentInfo,
    VhdError,
    VhdExtent,
    Zeros,
    open_vhd,
    read_footer,
)
from strongroom.formats.vhd.structs import vhd_time
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


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_reads_what_we_wrote(tmp_path: Path, kind: str) -> None:
    info = write(tmp_path / "d.vhd", SIZE, BASE, kind=kind)
    want = expected(BASE)
    with open_vhd(tmp_path / "d.vhd") as r:
        assert (r.size, r.kind, r.uuid, r.parent_uuid) == (SIZE, kind, info.uuid, None)
        assert r.read(0, SIZE + 4096) == want
        rnd = random.Random(0)
        for _ in range(100):
            off, n = rnd.randrange(SIZE), rnd.randrange(3 * MiB)
            assert r.read(off, n) == want[off : off + n]
    assert os.path.getsize(tmp_path / "d.vhd") == info.file_size


def test_extents_of_a_dynamic_disk(tmp_path: Path) -> None:
    write(tmp_path / "d.vhd", SIZE, BASE)
    with open_vhd(tmp_path / "d.vhd") as r:
        assert list(r.extents()) == [
            VhdExtent(0, 4 * MiB, True),
            VhdExtent(4 * MiB, 4 * MiB, False),
            VhdExtent(8 * MiB, SIZE - 8 * MiB, True),
        ]


def test_a_zeros_only_block_stays_unallocated_in_a_dynamic_disk(tmp_path: Path) -> None:
    info = write(tmp_path / "d.vhd", SIZE, [(0, Zeros(4 * MiB)), (4 * MiB, b"\1" * 512)])
    assert info.allocated_blocks == 1
    with open_vhd(tmp_path / "d.vhd") as r:
        assert [e.allocated for e in r.extents()] == [False, True, False]


def test_a_chain_of_three(tmp_path: Path) -> None:
    base = write(tmp_path / "base.vhd", SIZE, BASE)
    child = write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    write_child(tmp_path / "gc.vhd", tmp_path / "child.vhd", SIZE, GRANDCHILD)
    with open_vhd(tmp_path / "child.vhd") as r:
        assert r.kind == "differencing" and r.parent_uuid == base.uuid
        assert r.read(0, SIZE) == expected(BASE, CHILD)
    with open_vhd(tmp_path / "gc.vhd") as r:
        assert r.parent_uuid == child.uuid
        want = expected(BASE, CHILD, GRANDCHILD)
        assert r.read(0, SIZE) == want
        rnd = random.Random(1)
        for _ in range(100):
            off, n = rnd.randrange(SIZE), rnd.randrange(64 * KiB)
            assert r.read(off, n) == want[off : off + n]
        assert list(r.extents()) == [VhdExtent(0, SIZE, True)]


def test_the_chain_moves_as_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "a" / "child.vhd", tmp_path / "a" / "base.vhd", SIZE, CHILD)
    shutil.move(tmp_path / "a", tmp_path / "b")  # the absolute locator is now stale
    with open_vhd(tmp_path / "b" / "child.vhd") as r:
        assert r.read(0, SIZE) == expected(BASE, CHILD)
        assert r.parent is not None and r.parent.path.parent == tmp_path / "b"


def test_parent_in_another_folder_via_relative_locator(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "c").mkdir()
    write(tmp_path / "p" / "base.vhd", SIZE, BASE)
    info = ParentInfo.from_file(tmp_path / "p" / "base.vhd", tmp_path / "c" / "child.vhd")
    assert info.relative_path == "..\\p\\base.vhd"
    write(tmp_path / "c" / "child.vhd", SIZE, CHILD, kind="differencing", parent=info)
    with open_vhd(tmp_path / "c" / "child.vhd") as r:
        assert r.read(0, SIZE) == expected(BASE, CHILD)


def test_missing_parent_and_no_parent(tmp_path: Path) -> None:
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    (tmp_path / "base.vhd").unlink()
    with pytest.raises(VhdError, match="not found"):
        open_vhd(tmp_path / "child.vhd")
    with open_vhd(tmp_path / "child.vhd", parent_resolver=None) as r:
        assert r.read(6 * MiB, 2 * MiB) == dict(CHILD)[6 * MiB]
        with pytest.raises(VhdError, match="without its parent"):
            r.read(0, 4096)


def test_parent_locators_and_name_are_written(tmp_path: Path) -> None:
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    with open_vhd(tmp_path / "child.vhd") as r:
        ref = r.parent_ref
        assert ref is not None and ref.name == "base.vhd"
        locs = dict(ref.locators)
        assert locs[b"W2ru"] == ".\\base.vhd"
        assert locs[b"W2ku"] == str(tmp_path / "base.vhd").replace("/", "\\")
        mtime = (tmp_path / "base.vhd").stat().st_mtime
        assert ref.timestamp == vhd_time(mtime)  # the parent's modification time
        assert ref.uuid == read_footer(tmp_path / "base.vhd").uuid


@pytest.mark.parametrize(
    "options", ["subformat=dynamic", "subformat=fixed", "subformat=dynamic,force_size=on"]
)
def test_reads_what_qemu_wrote(tmp_path: Path, options: str) -> None:
    need("qemu-img")
    raw = bytearray(SIZE)
    raw[0:4096] = noise(20, 4096)
    raw[3 * MiB : 5 * MiB + 512] = noise(21, 2 * MiB + 512)
    raw[SIZE - 8192 :] = noise(22, 8192)
    (tmp_path / "in.raw").write_bytes(raw)
    vhd = tmp_path / "q.vhd"
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", options, tmp_path / "in.raw", vhd)
    info = run("qemu-img", "info", "-f", "vpc", vhd)
    virtual = int(info.split("virtual size:")[1].split("(")[1].split()[0])
    assert virtual >= SIZE
    with open_vhd(vhd) as r:
        assert r.size == virtual
        assert r.kind == ("fixed" if "fixed" in options else "dynamic")
        assert r.read(0, r.size) == bytes(raw) + bytes(virtual - SIZE)


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
