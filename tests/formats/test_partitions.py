"""MBR and GPT parsing: agreement with sfdisk, damaged tables, and fuzzing."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.formats.partitions import (
    MAX_LOGICAL,
    Partition,
    PartitionTableError,
    read_partitions,
)
from tests.formats.images import MiB, blank, fat_tree, make_ext, make_fat, sfdisk

SECTOR = 512
MBR_NAMES = {"83": "linux", "c": "fat32", "5": "extended", "7": "ntfs", "82": "linux-swap"}
GPT_NAMES = {
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "linux",
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "efi",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "linux-swap",
}


def reader(data: bytes | bytearray) -> Callable[[int, int], bytes]:
    """A read callback that fails the test if the parser reads outside the disk."""

    def read(offset: int, size: int) -> bytes:
        assert offset >= 0 and size >= 0 and offset + size <= len(data), (offset, size)
        return bytes(data[offset : offset + size])

    return read


def parse(data: bytes | bytearray) -> list[Partition]:
    return read_partitions(reader(data), len(data))


def parse_file(path: Path) -> list[Partition]:
    return parse(path.read_bytes())


def from_sfdisk(table: dict[str, object], names: dict[str, str]) -> list[Partition]:
    sector = int(table.get("sectorsize", SECTOR))  # type: ignore[call-overload]
    found = []
    for part in table["partitions"]:  # type: ignore[attr-defined]
        number = int(part["node"].rsplit("img", 1)[1])
        found.append(
            Partition(
                number,
                part["start"] * sector,
                part["size"] * sector,
                names.get(part["type"], part["type"]),
                part.get("name", ""),
            )
        )
    return found


# --- agreement with sfdisk -------------------------------------------------------------


def test_mbr_primaries_extended_and_logicals_match_sfdisk(tmp_path: Path) -> None:
    disk = blank(tmp_path / "disk.img", 100 * MiB)
    table = sfdisk(
        disk,
        "label: dos\n"
        "start=2048, size=20480, type=83\n"
        "start=22528, size=10240, type=c, bootable\n"
        "start=34816, size=100000, type=5\n"
        "start=36864, size=8192, type=83\n"
        "start=47104, size=8192, type=7\n"
        "start=57344, size=4096, type=82\n",
    )
    found = parse_file(disk)
    assert found == from_sfdisk(table, MBR_NAMES)
    assert [p.number for p in found] == [1, 2, 3, 5, 6, 7]


def test_gpt_matches_sfdisk_including_names_and_gaps(tmp_path: Path) -> None:
    disk = blank(tmp_path / "disk.img", 64 * MiB)
    table = sfdisk(
        disk,
        "label: gpt\n"
        f'{disk}1 : start=2048, size=20480, type=uefi, name="EFI system"\n'
        f'{disk}3 : start=22528, size=40960, type=linux, name="root fs ü"\n'
        f"{disk}4 : start=63488, size=2048, type=swap\n",
    )
    found = parse_file(disk)
    assert found == from_sfdisk(table, GPT_NAMES)
    assert [p.number for p in found] == [1, 3, 4]
    assert found[1].name == "root fs ü"


def gpt_image(sector: int, sectors: int, parts: list[tuple[str, int, int, str]]) -> bytearray:
    """A GPT disk built by hand (sfdisk of bookworm cannot choose the sector size)."""
    data = bytearray(sector * sectors)
    data[:SECTOR] = boot_sector(entry(0xEE, 1, min(sectors - 1, 2**32 - 1)))
    array = bytearray(128 * 128)
    for index, (guid, first, last, name) in enumerate(parts):
        raw = uuid.UUID(guid).bytes_le + uuid.uuid4().bytes_le
        raw += struct.pack("<QQQ", first, last, 0) + name.encode("utf-16-le").ljust(72, b"\0")
        array[index * 128 : (index + 1) * 128] = raw
    array_lbas = len(array) // sector
    last = sectors - 1
    for lba, other, entries in ((1, last, 2), (last, 1, last - array_lbas)):
        data[entries * sector : entries * sector + len(array)] = array
        header = struct.pack(
            "<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, lba, other,
            2 + array_lbas, last - array_lbas - 1, bytes(16), entries, 128, 128,
            zlib.crc32(array),
        )  # fmt: skip
        header = header[:16] + struct.pack("<I", zlib.crc32(header)) + header[20:]
        data[lba * sector : lba * sector + len(header)] = header
    return data


def test_gpt_on_4096_byte_sectors() -> None:
    linux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    data = gpt_image(4096, 2048, [(linux, 256, 511, "root"), (linux, 600, 700, "")])
    assert parse(data) == [
        Partition(1, 256 * 4096, 256 * 4096, "linux", "root"),
        Partition(2, 600 * 4096, 101 * 4096, "linux"),
    ]
    assert parse(gpt_image(512, 2048, [(linux, 40, 99, "x")])) == [
        Partition(1, 40 * 512, 60 * 512, "linux", "x")
    ]


def test_bare_file_systems_and_blank_disks_have_no_table(tmp_path: Path) -> None:
    source = fat_tree(tmp_path / "src")
    assert parse_file(make_fat(tmp_path / "fat12.img", source, 12, 2)) == []
    assert parse_file(make_fat(tmp_path / "fat32.img", source, 32, 40)) == []
    assert parse_file(make_ext(tmp_path / "ext4.img", source, size="4M")) == []
    assert parse(bytes(4 * MiB)) == []
    assert parse(b"") == []
    assert parse(b"\x55\xaa" * 300) == []


# --- damaged tables ----------------------------------------------------------------------


def entry(kind: int, start: int, size: int, boot: int = 0) -> bytes:
    return struct.pack("<B3xB3xII", boot, kind, start, size)


def boot_sector(*entries: bytes) -> bytes:
    table = b"".join(entries).ljust(64, b"\0")
    return bytes(446) + table + b"\x55\xaa"


def disk_with(sectors: int, **at: bytes) -> bytearray:
    """A disk of `sectors` sectors with sector contents given as s<number>=..."""
    data = bytearray(sectors * SECTOR)
    for name, content in at.items():
        offset = int(name[1:]) * SECTOR
        data[offset : offset + len(content)] = content
    return data


def test_mbr_partition_past_the_disk_end_raises() -> None:
    data = disk_with(100, s0=boot_sector(entry(0x83, 2, 50), entry(0x83, 60, 41)))
    with pytest.raises(PartitionTableError, match="partition 2 ends past the disk end"):
        parse(data)


def test_overlapping_primaries_raise() -> None:
    data = disk_with(100, s0=boot_sector(entry(0x83, 2, 50), entry(0x0C, 40, 20)))
    with pytest.raises(PartitionTableError, match="partitions 1 and 2 overlap"):
        parse(data)


def test_a_partition_over_the_mbr_raises() -> None:
    with pytest.raises(PartitionTableError, match="overlaps the MBR"):
        parse(disk_with(100, s0=boot_sector(entry(0x83, 0, 50))))


def test_invalid_boot_flags_mean_a_boot_sector_not_a_table() -> None:
    assert parse(disk_with(100, s0=boot_sector(entry(0x83, 2, 50, boot=0x41)))) == []


def test_ebr_chain_with_logical_partitions() -> None:
    data = disk_with(
        200,
        s0=boot_sector(entry(0x83, 2, 8), entry(0x05, 10, 190)),
        s10=boot_sector(entry(0x83, 1, 20), entry(0x05, 30, 50)),  # next EBR at 10 + 30
        s40=boot_sector(entry(0x07, 2, 30)),
    )
    assert parse(data) == [
        Partition(1, 2 * SECTOR, 8 * SECTOR, "linux"),
        Partition(2, 10 * SECTOR, 190 * SECTOR, "extended"),
        Partition(5, 11 * SECTOR, 20 * SECTOR, "linux"),
        Partition(6, 42 * SECTOR, 30 * SECTOR, "ntfs"),
    ]


def test_an_empty_extended_partition_has_no_logicals() -> None:
    data = disk_with(100, s0=boot_sector(entry(0x05, 10, 90)))
    assert parse(data) == [Partition(1, 10 * SECTOR, 90 * SECTOR, "extended")]


def test_ebr_loop_raises() -> None:
    data = disk_with(
        200,
        s0=boot_sector(entry(0x0F, 10, 190)),
        s10=boot_sector(entry(0x83, 1, 10), entry(0x05, 30, 50)),
        s40=boot_sector(entry(0x83, 1, 10), entry(0x05, 0, 50)),  # back to the first EBR
    )
    with pytest.raises(PartitionTableError, match="EBR chain loops back to sector 10"):
        parse(data)


def test_ebr_outside_the_extended_partition_raises() -> None:
    data = disk_with(
        300,
        s0=boot_sector(entry(0x05, 10, 100)),
        s10=boot_sector(entry(0x83, 1, 10), entry(0x05, 150, 50)),
    )
    with pytest.raises(PartitionTableError, match="outside the extended partition"):
        parse(data)


def test_logical_partition_outside_the_extended_partition_raises() -> None:
    data = disk_with(
        300, s0=boot_sector(entry(0x05, 10, 100)), s10=boot_sector(entry(0x83, 1, 150))
    )
    with pytest.raises(PartitionTableError, match="logical partition 5 lies outside"):
        parse(data)


def test_linked_ebr_without_signature_raises() -> None:
    data = disk_with(
        200,
        s0=boot_sector(entry(0x05, 10, 100)),
        s10=boot_sector(entry(0x83, 1, 5), entry(0x05, 20, 10)),
    )
    with pytest.raises(PartitionTableError, match="has no boot signature"):
        parse(data)


def test_too_many_logical_partitions_raise() -> None:
    sectors = {f"s{10 + 2 * i}": boot_sector(entry(0x83, 1, 1), entry(0x05, 2 * i + 2, 2))
               for i in range(MAX_LOGICAL + 5)}  # fmt: skip
    data = disk_with(600, s0=boot_sector(entry(0x05, 10, 590)), **sectors)
    with pytest.raises(PartitionTableError, match=f"more than {MAX_LOGICAL} logical"):
        parse(data)


def test_short_reads_raise() -> None:
    data = disk_with(100, s0=boot_sector(entry(0x83, 2, 50)))
    with pytest.raises(PartitionTableError, match="short read"):
        read_partitions(lambda offset, size: bytes(data[offset : offset + size // 2]), len(data))


@pytest.fixture
def gpt_disk(tmp_path: Path) -> bytearray:
    disk = blank(tmp_path / "disk.img", 8 * MiB)
    sfdisk(
        disk, "label: gpt\nstart=2048, size=4096, type=linux\nstart=6144, size=2048, type=uefi\n"
    )
    return bytearray(disk.read_bytes())


def _refresh_crcs(data: bytearray, lba: int) -> None:
    """Recompute the entry-array and header CRCs of the GPT header at `lba`."""
    header = lba * SECTOR
    size, entries_lba, count, entry_size = (
        struct.unpack_from("<I", data, header + 12)[0],
        *struct.unpack_from("<QII", data, header + 72),
    )
    array = data[entries_lba * SECTOR : entries_lba * SECTOR + count * entry_size]
    struct.pack_into("<I", data, header + 88, zlib.crc32(array))
    struct.pack_into("<I", data, header + 16, 0)
    struct.pack_into("<I", data, header + 16, zlib.crc32(data[header : header + size]))


def _last_lba(data: bytearray) -> int:
    return len(data) // SECTOR - 1


def test_a_damaged_primary_gpt_falls_back_to_the_backup(gpt_disk: bytearray) -> None:
    expected = parse(gpt_disk)
    gpt_disk[SECTOR + 40] ^= 0xFF  # first usable LBA: the header CRC no longer matches
    assert parse(gpt_disk) == expected
    gpt_disk[2 * SECTOR] ^= 0xFF  # the primary entry array too
    assert parse(gpt_disk) == expected


def test_bad_gpt_header_crcs_everywhere_raise(gpt_disk: bytearray) -> None:
    gpt_disk[SECTOR + 16] ^= 1
    gpt_disk[_last_lba(gpt_disk) * SECTOR + 16] ^= 1
    with pytest.raises(PartitionTableError, match="fails its CRC32 check") as raised:
        parse(gpt_disk)
    assert "\n" not in str(raised.value)


def test_bad_gpt_entry_array_crcs_raise(gpt_disk: bytearray) -> None:
    backup_array = struct.unpack_from("<Q", gpt_disk, _last_lba(gpt_disk) * SECTOR + 72)[0]
    gpt_disk[2 * SECTOR + 40] ^= 1
    gpt_disk[backup_array * SECTOR + 40] ^= 1
    with pytest.raises(PartitionTableError, match="entry array fails its CRC32"):
        parse(gpt_disk)


def test_gpt_entry_past_the_usable_area_raises(gpt_disk: bytearray) -> None:
    for lba in (1, _last_lba(gpt_disk)):
        entries = struct.unpack_from("<Q", gpt_disk, lba * SECTOR + 72)[0]
        struct.pack_into("<Q", gpt_disk, entries * SECTOR + 40, len(gpt_disk) // SECTOR + 5)
        _refresh_crcs(gpt_disk, lba)
    with pytest.raises(PartitionTableError, match=r"partition 1 .* lies outside the usable area"):
        parse(gpt_disk)


def test_gpt_usable_area_past_the_disk_end_raises(gpt_disk: bytearray) -> None:
    for lba in (1, _last_lba(gpt_disk)):
        struct.pack_into("<Q", gpt_disk, lba * SECTOR + 48, 1 << 40)
        _refresh_crcs(gpt_disk, lba)
    with pytest.raises(PartitionTableError, match="past the disk end"):
        parse(gpt_disk)


def test_implausible_gpt_entry_counts_raise(gpt_disk: bytearray) -> None:
    for lba in (1, _last_lba(gpt_disk)):
        struct.pack_into("<I", gpt_disk, lba * SECTOR + 80, 1 << 30)
        _refresh_crcs(gpt_disk, lba)
    with pytest.raises(PartitionTableError, match="not plausible"):
        parse(gpt_disk)


def test_gpt_without_a_protective_mbr_is_still_read(gpt_disk: bytearray) -> None:
    expected = parse(gpt_disk)
    gpt_disk[:SECTOR] = bytes(SECTOR)
    assert parse(gpt_disk) == expected


# --- fuzzing -----------------------------------------------------------------------------


def _bounded_reader(data: bytes | bytearray) -> Callable[[int, int], bytes]:
    calls = [0]
    read = reader(data)

    def counted(offset: int, size: int) -> bytes:
        calls[0] += 1
        assert calls[0] < 2 * MAX_LOGICAL + 20, "too many reads: a loop?"
        return read(offset, size)

    return counted


def _parses_or_refuses(data: bytes | bytearray) -> None:
    try:
        found = read_partitions(_bounded_reader(data), len(data))
    except PartitionTableError as error:
        assert "\n" not in str(error)
        return
    for part in found:
        assert part.start >= 0 and part.size > 0 and part.start + part.size <= len(data)


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=8 * SECTOR))
def test_random_bytes_give_a_list_or_partition_table_error(data: bytes) -> None:
    _parses_or_refuses(data)


small = st.integers(0, 80) | st.integers(0, 2**32 - 1)
kinds = st.sampled_from([0x00, 0x05, 0x0F, 0x85, 0x83, 0x0C, 0xEE, 0x07, 0x42])
entries = st.builds(entry, kinds, small, small, st.sampled_from([0, 0x80]))


@settings(max_examples=300)
@given(
    st.lists(entries, min_size=4, max_size=4),
    st.dictionaries(st.integers(1, 63), st.lists(entries, min_size=2, max_size=2), max_size=12),
)
def test_random_mbr_and_ebr_chains_terminate(
    primaries: list[bytes], ebrs: dict[int, list[bytes]]
) -> None:
    data = disk_with(64, s0=boot_sector(*primaries))
    for sector, pair in ebrs.items():
        data[sector * SECTOR : (sector + 1) * SECTOR] = boot_sector(*pair)
    _parses_or_refuses(data)


@settings(max_examples=300)
@given(
    fields=st.tuples(
        st.integers(0, 200) | st.integers(0, 2**32 - 1),  # header size
        st.integers(0, 70),  # first usable
        st.integers(0, 70) | st.integers(0, 2**64 - 1),  # last usable
        st.integers(0, 70) | st.integers(0, 2**64 - 1),  # entries LBA
        st.integers(0, 8) | st.integers(0, 2**32 - 1),  # entry count
        st.sampled_from([0, 64, 128, 256, 129]) | st.integers(0, 2**32 - 1),  # entry size
    ),
    array=st.binary(min_size=0, max_size=4 * SECTOR),
)
def test_random_gpt_headers_with_valid_crcs_terminate(
    fields: tuple[int, int, int, int, int, int], array: bytes
) -> None:
    header_size, first, last, entries_lba, count, entry_size = fields
    data = disk_with(72, s0=boot_sector(entry(0xEE, 1, 71)))
    data[2 * SECTOR : 2 * SECTOR + len(array)] = array
    header = bytearray(SECTOR)
    struct.pack_into("<8sIIIIQQQQ16sQIII", header, 0, b"EFI PART", 0x10000, header_size, 0, 0,
                     1, 71, first, last, bytes(16), entries_lba, count, entry_size,
                     zlib.crc32(array))  # fmt: skip
    if 92 <= header_size <= SECTOR:
        struct.pack_into("<I", header, 16, zlib.crc32(header[:header_size]))
    data[SECTOR : 2 * SECTOR] = header
    _parses_or_refuses(data)
