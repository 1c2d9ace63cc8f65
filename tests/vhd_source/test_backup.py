"""`backup --image x.vhd`: fixed and dynamic VHDs written by qemu-img, and a
differencing chain, restore to the bytes the disk reads; an incremental backup
by comparison stores only the changed blocks; bitmaps and damaged files fail
with one line and leave no point."""

from __future__ import annotations

import os
import shutil
from itertools import pairwise
from pathlib import Path

import pytest

from strongroom.formats.vhd import ParentInfo, Zeros, write_vhd
from strongroom.sources.vhd import VhdSource, looks_like_vhd
from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.images import (
    BS,
    KiB,
    MiB,
    backup,
    list_points,
    restore_and_compare,
    touched,
    write_random,
)
from tests.vhd_source.conftest import (
    QEMU_IMG,
    SIZE,
    chain,
    expected_raw,
    own_vhd,
    qemu_vhd,
    raw_disk,
)

# Unaligned: one change in data, one in a hole, one across two 64 KiB blocks.
CHANGES = [(64 * KiB + 5, 1000), (5 * MiB + 3, 8 * KiB), (3 * MiB + 60 * KiB, 8 * KiB)]


def image_format(cli: CliRunner, point_id: str) -> str:
    (point,) = [p for p in list_points(cli) if p["id"] == point_id]
    return str(point["summary"]["image_format"])


def allocated_bytes(vhd: Path) -> int:
    src = VhdSource(vhd)
    try:
        return sum(e.length for e in src.allocation() if not e.zero)
    finally:
        src.close()


@QEMU_IMG
@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_qemu_written_vhd_restores_byte_exactly(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, subformat: str
) -> None:
    raw = raw_disk(tmp_path / "disk.raw")
    vhd = qemu_vhd(raw, tmp_path / "disk.vhd", subformat)
    expected = expected_raw(raw, vhd, tmp_path / "expected.raw")
    assert looks_like_vhd(vhd) and not looks_like_vhd(raw)

    s = backup(cli, vhd, "--block-size", str(BS))

    assert image_format(cli, s["point_id"]) == "vhd" and s["tracker"] == "full"
    assert s["size"] == os.path.getsize(expected)  # the footer's size, not the file's
    restore_and_compare(cli, s["point_id"], expected, tmp_path)
    # Blocks no file allocates are holes: never read.
    assert s["bytes_read"] == allocated_bytes(vhd)
    if subformat == "dynamic":
        assert s["bytes_read"] < SIZE


def test_differencing_chain_restores_base_overlaid_by_child(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    _base, child, expected = chain(tmp_path)

    s = backup(cli, child, "--block-size", str(BS))

    assert image_format(cli, s["point_id"]) == "vhd"
    restore_and_compare(cli, s["point_id"], expected, tmp_path)


@QEMU_IMG
def test_incremental_by_comparison_stores_the_changed_blocks(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    raw = raw_disk(tmp_path / "disk.raw")
    vhd = qemu_vhd(raw, tmp_path / "disk.vhd", "dynamic")
    first = backup(cli, vhd, "--block-size", str(BS))
    v1 = expected_raw(raw, vhd, tmp_path / "v1.raw")
    for i, (offset, length) in enumerate(CHANGES):
        write_random(raw, offset, length, seed=100 + i)
    vhd.unlink()
    qemu_vhd(raw, vhd, "dynamic")
    changed = touched(CHANGES)
    assert len(changed) == 4

    s = backup(cli, vhd)

    assert s["tracker"] == "compare" and s["parent"] == first["point_id"]
    assert s["blocks_changed"] == len(changed)
    assert s["blocks_new"] == len(changed)
    assert len(changed) * BS <= s["data_added"] < len(changed) * BS + 64 * KiB
    assert s["bytes_read"] == allocated_bytes(vhd)  # every allocated block compared
    restore_and_compare(cli, s["point_id"], expected_raw(raw, vhd, tmp_path / "v2.raw"), tmp_path)
    restore_and_compare(cli, first["point_id"], v1, tmp_path)


def test_unchanged_chain_adds_nothing(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    _base, child, _expected = chain(tmp_path)
    backup(cli, child, "--block-size", str(BS))
    s = backup(cli, child, "--changed-since", "compare")
    assert s["tracker"] == "compare"
    assert s["blocks_changed"] == s["blocks_new"] == 0


@pytest.mark.parametrize("tracker", ["bitmap", "overlay"])
def test_bitmap_tracker_on_a_vhd_is_a_usage_error(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, tracker: str
) -> None:
    vhd = own_vhd(raw_disk(tmp_path / "disk.raw"), tmp_path / "disk.vhd")
    result = cli("backup", "--image", str(vhd), "--changed-since", tracker)
    assert result.rc == 2
    assert_one_line_error(result, "a VHD carries no dirty bitmaps")
    assert list_points(cli) == []


@pytest.mark.parametrize("kind", ["dynamic", "differencing"])
def test_truncated_vhd_fails_with_one_line_and_no_point(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, kind: str
) -> None:
    if kind == "dynamic":
        vhd = own_vhd(raw_disk(tmp_path / "disk.raw"), tmp_path / "disk.vhd")
    else:
        _base, vhd, _expected = chain(tmp_path)
    os.truncate(vhd, os.path.getsize(vhd) // 2)

    result = cli("backup", "--image", str(vhd), "--json")

    assert result.rc == 1
    assert_one_line_error(result, vhd.name)
    assert list_points(cli) == []


def test_differencing_vhd_with_a_wrong_parent_fails(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    base, child, _expected = chain(tmp_path)
    other = own_vhd(raw_disk(tmp_path / "other.raw", seed=7), tmp_path / "other.vhd")
    shutil.copy(other, base)  # same name, another disk: another unique id

    result = cli("backup", "--image", str(child), "--json")

    assert result.rc == 1
    assert_one_line_error(result, "child expects")
    assert list_points(cli) == []


def test_differencing_vhd_with_a_missing_parent_fails(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    base, child, _expected = chain(tmp_path)
    base.unlink()
    result = cli("backup", "--image", str(child), "--json")
    assert result.rc == 1
    assert_one_line_error(result, "not found")
    assert list_points(cli) == []


def test_source_counts_only_allocated_bytes(tmp_path: Path) -> None:
    _base, child, expected = chain(tmp_path)
    data = expected.read_bytes()
    src = VhdSource(child)
    try:
        extents = list(src.allocation())
        assert extents[0].offset == 0 and extents[-1].end == src.size == SIZE
        assert all(a.end == b.offset for a, b in pairwise(extents))
        for e in extents:
            if e.zero:
                assert data[e.offset : e.end] == bytes(e.length)
        ranges = [(0, SIZE // 2), (SIZE // 2, SIZE // 2)]
        got = b"".join(bytes(d) for _, d in src.read_blocks(ranges))
        assert got == data
        assert src.bytes_read == sum(e.length for e in extents if not e.zero)
        with pytest.raises(Exception, match="beyond the disk"):
            list(src.read_blocks([(SIZE - 512, 1024)]))
    finally:
        src.close()
        src.close()  # idempotent


def test_zeros_in_the_child_hide_the_parent(tmp_path: Path) -> None:
    base, _child, _expected = chain(tmp_path)

    child = tmp_path / "zeros.vhd"
    with open(child, "wb") as f:
        write_vhd(
            f,
            SIZE,
            [(0, Zeros(128 * KiB))],
            kind="differencing",
            parent=ParentInfo.from_file(base, child),
        )
    src = VhdSource(child)
    try:
        ((_, data),) = list(src.read_blocks([(0, 256 * KiB)]))
        assert bytes(data[: 128 * KiB]) == bytes(128 * KiB)
        below = (tmp_path / "base.raw").read_bytes()[128 * KiB : 256 * KiB]
        assert bytes(data[128 * KiB :]) == below
    finally:
        src.close()


def test_chain_backup_matches_libvhdi(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """An independent reader (libvhdi, with the parent set) reads what was backed up."""
    pyvhdi = pytest.importorskip("pyvhdi")
    base, child, _expected = chain(tmp_path)
    parent, top = pyvhdi.file(), pyvhdi.file()
    parent.open(str(base))
    top.open(str(child))
    top.set_parent(parent)
    try:
        theirs = top.read_buffer_at_offset(top.get_media_size(), 0)
    finally:
        top.close()
        parent.close()
    truth = tmp_path / "libvhdi.raw"
    truth.write_bytes(theirs)

    s = backup(cli, child, "--block-size", str(BS))

    restore_and_compare(cli, s["point_id"], truth, tmp_path)
