"""The codecs: checksums, geometry, round trips, size limits."""

from __future__ import annotations

import io
import uuid

import pytest

from strongroom.formats.vhd import MAX_SIZE, VhdError, VhdTooLarge, write_vhd
from strongroom.formats.vhd.structs import (
    DIFFERENCING,
    DynamicHeader,
    Footer,
    Locator,
    bitmap_size,
    checksum,
    geometry,
    unix_time,
    vhd_time,
)
from strongroom.formats.vhd.writer import _set_bits


def test_checksum_is_ones_complement_of_byte_sum() -> None:
    data = bytes([1, 2, 3, 0xFF, 0xFF, 0xFF, 0xFF, 4])
    assert checksum(data, 3) == ~(1 + 2 + 3 + 4) & 0xFFFFFFFF


@pytest.mark.parametrize(
    ("size", "chs"),
    [
        (10 * 2**20, (301, 4, 17)),  # small disks: 17 sectors per track
        (127 * 2**30, (65278, 16, 255)),  # large disks: 255 sectors per track
        (65535 * 16 * 255 * 512, (65535, 16, 255)),  # the CHS maximum
        (3 * 2**40, (65535, 16, 255)),  # beyond: capped
    ],
)
def test_geometry_follows_the_spec_appendix(size: int, chs: tuple[int, int, int]) -> None:
    assert geometry(size) == chs


def test_geometry_product_never_exceeds_size() -> None:
    for mib in (1, 7, 100, 504, 1000, 4000, 32000, 130000):
        c, h, s = geometry(mib * 2**20)
        assert c * h * s * 512 <= mib * 2**20
        assert h <= 16 and s <= 255 and c <= 65535


def test_footer_round_trip_and_checksum() -> None:
    f = Footer(kind=3, current_size=2**30, uuid=uuid.uuid4(), data_offset=512, timestamp=7)
    raw = f.pack()
    assert len(raw) == 512 and raw[:8] == b"conectix" and raw[28:32] == b"win "
    assert Footer.unpack(raw) == Footer.unpack(Footer.unpack(raw).pack())
    back = Footer.unpack(raw)
    assert (back.kind, back.current_size, back.uuid, back.timestamp) == (3, 2**30, f.uuid, 7)
    bad = bytearray(raw)
    bad[100] ^= 1
    with pytest.raises(VhdError, match="checksum"):
        Footer.unpack(bytes(bad))


def test_header_round_trip_with_parent() -> None:
    parent = uuid.uuid4()
    h = DynamicHeader(
        table_offset=2560,
        max_table_entries=5,
        parent_uuid=parent,
        parent_timestamp=99,
        parent_name="bäse.vhd",
        locators=(Locator(b"W2ku", 512, 20, 1536),),
    )
    raw = h.pack()
    assert raw[:8] == b"cxsparse" and raw[64:80] == "bäse.vhd".encode("utf-16-be")
    back = DynamicHeader.unpack(raw)
    assert back.parent_uuid == parent and back.parent_name == "bäse.vhd"
    assert back.locators[0] == Locator(b"W2ku", 512, 20, 1536)
    assert back.locators[1].code == b"\0\0\0\0"
    assert DIFFERENCING == 4


def test_time_stamps_count_from_2000() -> None:
    assert vhd_time(946684800) == 0
    assert unix_time(vhd_time(1_700_000_000)) == 1_700_000_000
    assert vhd_time(0) == 0  # before 2000: clamped


def test_bitmap_sizes_and_bits_are_msb_first() -> None:
    assert bitmap_size(2 << 20) == 512
    assert bitmap_size(4096) == 512
    assert bitmap_size(1 << 28) == 64 << 10
    bm = bytearray(4)
    _set_bits(bm, 1, 1)
    assert bm[0] == 0x40
    _set_bits(bm, 6, 12)
    assert bytes(bm) == bytes([0x43, 0xFF, 0xC0, 0])


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_size_beyond_2040_gib_is_refused(kind: str) -> None:
    with pytest.raises(VhdTooLarge, match="2040 GiB"):
        write_vhd(io.BytesIO(), MAX_SIZE + 512, [], kind=kind)  # type: ignore[arg-type]


def test_malformed_extents_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        write_vhd(io.BytesIO(), 2**20, [(100, b"x" * 512)])
    with pytest.raises(ValueError, match="order"):
        write_vhd(io.BytesIO(), 2**20, [(4096, b"x" * 512), (0, b"x" * 512)])
    with pytest.raises(ValueError, match="order or past"):
        write_vhd(io.BytesIO(), 2**20, [(2**20, b"x" * 512)])
    with pytest.raises(TypeError, match="Zeros"):
        write_vhd(io.BytesIO(), 2**20, [(0, None)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="parent"):
        write_vhd(io.BytesIO(), 2**20, [], kind="differencing")
