"""Partition tables of whole-disk images: MBR (with extended/logical partitions) and GPT.

Written by hand, as a pure function over a read callback, because the disk is a
recovery point in the repository, not a device the kernel or libblkid could
open, and a table is small enough to read completely and check field by field.

The image may be damaged or hostile, so nothing in it is trusted: every sector
address and size is checked against the disk size before it is read, EBR chains
never revisit a sector and stop after `MAX_LOGICAL` partitions, GPT entry arrays
are bounded by `MAX_GPT_ENTRIES` and `MAX_GPT_ARRAY_BYTES`, and both GPT CRC32s
are verified. Damage raises `PartitionTableError` with a one-line message; a
disk without any table gives an empty list.

Numbering follows Linux (sda1...): MBR primaries by slot 1-4, logical partitions
from 5 in chain order, GPT partitions by entry index + 1. MBR sectors are 512
bytes; GPT is also found on disks with 4096-byte logical sectors.
"""

from __future__ import annotations

import itertools
import struct
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from strongroom.errors import SourceError

ReadFn = Callable[[int, int], bytes]

MBR_SECTOR = 512
GPT_SECTOR_SIZES = (512, 4096)
MAX_LOGICAL = 128
MAX_GPT_ENTRIES = 4096
MAX_GPT_ARRAY_BYTES = 1 << 20

_BOOT_SIGNATURE = b"\x55\xaa"
_GPT_SIGNATURE = b"EFI PART"
_PROTECTIVE = 0xEE
_EXTENDED = frozenset({0x05, 0x0F, 0x85})

_MBR_TYPES = {
    0x01: "fat12",
    0x04: "fat16",
    0x06: "fat16",
    0x0E: "fat16",
    0x0B: "fat32",
    0x0C: "fat32",
    0x07: "ntfs",
    0x05: "extended",
    0x0F: "extended",
    0x85: "extended",
    0x82: "linux-swap",
    0x83: "linux",
    0x8E: "linux-lvm",
    0xFD: "linux-raid",
    0xEF: "efi",
    0xA5: "freebsd",
    0xA6: "openbsd",
    0xA9: "netbsd",
    0xAF: "hfs",
}

_GPT_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "efi",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "linux",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "linux-swap",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "linux-lvm",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "linux-raid",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "linux-root-x86-64",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "linux-home",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "linux-boot",
    "21686148-6449-6E6F-744E-656564454649": "bios-boot",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "microsoft-basic-data",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "microsoft-reserved",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "windows-recovery",
    "48465300-0000-11AA-AA11-00306543ECAC": "apple-hfs",
    "7C3457EF-0000-11AA-AA11-00306543ECAC": "apple-apfs",
}


class PartitionTableError(SourceError):
    """A partition table is present but damaged or inconsistent with the disk."""


@dataclass(frozen=True)
class Partition:
    """One partition, in bytes, numbered as Linux names it (sda1, sda5...)."""

    number: int
    start: int
    size: int
    type: str
    name: str = ""


def read_partitions(read: ReadFn, disk_size: int) -> list[Partition]:
    """Parse the MBR or GPT of a disk of `disk_size` bytes, read through `read(offset, size)`.

    Returns the partitions sorted by number, including an MBR extended container
    (type "extended") and never the GPT protective entry; [] when the disk has no
    partition table (for example a bare FAT or ext file system). Raises
    `PartitionTableError` when a table is present but damaged. Reads only the
    table sectors, never outside [0, disk_size).
    """
    disk = _Disk(read, disk_size)
    if disk_size < 2 * MBR_SECTOR:
        return []
    mbr = disk.read(0, MBR_SECTOR)
    if mbr[510:512] != _BOOT_SIGNATURE:
        # No protective MBR; a GPT header is still worth honouring (sector 0 wiped).
        return _read_gpt(disk) if _has_gpt_signature(disk) else []
    entries = [_MbrEntry.parse(mbr, 446 + 16 * i) for i in range(4)]
    if any(entry.boot not in (0x00, 0x80) for entry in entries):
        return []  # A boot sector of a file system, not a partition table (as Linux decides).
    if any(entry.type == _PROTECTIVE for entry in entries):
        return _read_gpt(disk)
    return _read_mbr(disk, entries)


class _Disk:
    """The read callback, refusing reads outside the disk and reporting short ones."""

    def __init__(self, read: ReadFn, size: int) -> None:
        self._read = read
        self.size = size

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise PartitionTableError(
                f"partition table points past the disk end (byte {offset + size} > {self.size})"
            )
        data = self._read(offset, size)
        if len(data) != size:
            raise PartitionTableError(f"short read at byte {offset}: {len(data)} of {size} bytes")
        return data


@dataclass(frozen=True)
class _MbrEntry:
    boot: int
    type: int
    start: int  # sectors
    size: int  # sectors

    @classmethod
    def parse(cls, sector: bytes, offset: int) -> _MbrEntry:
        boot, kind, start, size = struct.unpack_from("<B3xB3xII", sector, offset)
        return cls(boot, kind, start, size)

    @property
    def used(self) -> bool:
        return self.type != 0 and self.size != 0


def _mbr_type(kind: int) -> str:
    return _MBR_TYPES.get(kind, f"0x{kind:02x}")


def _read_mbr(disk: _Disk, entries: Sequence[_MbrEntry]) -> list[Partition]:
    total = disk.size // MBR_SECTOR
    primaries: list[Partition] = []
    logicals: list[Partition] = []
    for slot, entry in enumerate(entries, start=1):
        if not entry.used:
            continue
        if entry.start < 1:
            raise PartitionTableError(f"MBR partition {slot} overlaps the MBR itself")
        if entry.start + entry.size > total:
            raise PartitionTableError(
                f"MBR partition {slot} ends past the disk end "
                f"(sector {entry.start + entry.size} > {total})"
            )
        start, size = entry.start * MBR_SECTOR, entry.size * MBR_SECTOR
        primaries.append(Partition(slot, start, size, _mbr_type(entry.type)))
        if entry.type in _EXTENDED:
            first = 5 + len(logicals)
            logicals += _read_logicals(disk, entry.start, entry.size, first)
    _check_overlaps(primaries, "MBR")
    _check_overlaps(logicals, "logical")
    return primaries + logicals


def _read_logicals(disk: _Disk, ext_start: int, ext_size: int, first: int) -> list[Partition]:
    """Follow the EBR chain of one extended partition (addresses in sectors).

    A link is relative to the extended partition's start, a logical partition to
    its own EBR. The chain never revisits an EBR and stops after MAX_LOGICAL EBRs.
    """
    ext_end = ext_start + ext_size
    found: list[Partition] = []
    seen: set[int] = set()
    ebr, linked_from = ext_start, 0
    while True:
        if ebr in seen:
            raise PartitionTableError(f"EBR chain loops back to sector {ebr}")
        if len(seen) >= MAX_LOGICAL:
            raise PartitionTableError(f"more than {MAX_LOGICAL} logical partitions")
        if not ext_start <= ebr < ext_end:
            raise PartitionTableError(f"EBR at sector {ebr} lies outside the extended partition")
        seen.add(ebr)
        sector = disk.read(ebr * MBR_SECTOR, MBR_SECTOR)
        if sector[510:512] != _BOOT_SIGNATURE:
            if linked_from:
                raise PartitionTableError(
                    f"EBR at sector {ebr} (linked from sector {linked_from}) has no boot signature"
                )
            return found  # An extended partition that holds no logical partitions yet.
        data, link = _MbrEntry.parse(sector, 446), _MbrEntry.parse(sector, 462)
        if data.used and data.type not in _EXTENDED:
            number = first + len(found)
            start = ebr + data.start
            if data.start < 1 or start + data.size > ext_end:
                raise PartitionTableError(
                    f"logical partition {number} lies outside the extended partition"
                )
            found.append(
                Partition(number, start * MBR_SECTOR, data.size * MBR_SECTOR, _mbr_type(data.type))
            )
        if not (link.used and link.type in _EXTENDED):
            return found
        ebr, linked_from = ext_start + link.start, ebr


def _has_gpt_signature(disk: _Disk) -> bool:
    return any(
        disk.size >= 2 * size and disk.read(size, 8) == _GPT_SIGNATURE for size in GPT_SECTOR_SIZES
    )


@dataclass(frozen=True)
class _GptHeader:
    sector: int
    first_usable: int
    last_usable: int
    entries_lba: int
    count: int
    entry_size: int
    entries_crc: int


def _read_gpt(disk: _Disk) -> list[Partition]:
    """Read the primary GPT, falling back to the backup at the last LBA as UEFI says."""
    sizes = [
        s for s in GPT_SECTOR_SIZES if disk.size >= 2 * s and disk.read(s, 8) == _GPT_SIGNATURE
    ]
    failures: list[PartitionTableError] = []
    for sector in sizes or GPT_SECTOR_SIZES:
        for lba in (1, disk.size // sector - 1):
            try:
                return _gpt_entries(disk, _gpt_header(disk, sector, lba))
            except PartitionTableError as failure:
                failures.append(failure)
    raise PartitionTableError(f"{failures[0]}; backup GPT: {failures[1]}")


def _gpt_header(disk: _Disk, sector: int, lba: int) -> _GptHeader:
    total = disk.size // sector
    if lba < 1 or lba >= total:
        raise PartitionTableError(f"no room for a GPT header at LBA {lba}")
    raw = disk.read(lba * sector, sector)
    if raw[:8] != _GPT_SIGNATURE:
        raise PartitionTableError(f"no GPT header at LBA {lba}")
    (header_size, crc, my_lba, first_usable, last_usable, entries_lba, count, entry_size,
     entries_crc) = struct.unpack_from("<12xII4xQ8xQQ16xQIII", raw)  # fmt: skip
    if not 92 <= header_size <= sector:
        raise PartitionTableError(f"GPT header at LBA {lba} has a bad size {header_size}")
    if zlib.crc32(raw[:16] + b"\0\0\0\0" + raw[20:header_size]) != crc:
        raise PartitionTableError(f"GPT header at LBA {lba} fails its CRC32 check")
    if my_lba != lba:
        raise PartitionTableError(f"GPT header at LBA {lba} claims to be at LBA {my_lba}")
    if not first_usable <= last_usable < total:
        raise PartitionTableError(
            f"GPT usable area {first_usable}-{last_usable} lies past the disk end ({total} LBAs)"
        )
    if count > MAX_GPT_ENTRIES or entry_size < 128 or entry_size & (entry_size - 1):
        raise PartitionTableError(f"GPT has {count} entries of {entry_size} bytes: not plausible")
    array = count * entry_size
    if array > MAX_GPT_ARRAY_BYTES:
        raise PartitionTableError(f"GPT entry array of {array} bytes is too large")
    array_end = entries_lba * sector + array
    if entries_lba < 2 or array_end > disk.size:
        raise PartitionTableError(f"GPT entry array at LBA {entries_lba} lies outside the disk")
    if entries_lba <= lba < entries_lba + -(-array // sector):
        raise PartitionTableError(f"GPT entry array at LBA {entries_lba} overlaps its header")
    return _GptHeader(
        sector, first_usable, last_usable, entries_lba, count, entry_size, entries_crc
    )


def _gpt_entries(disk: _Disk, header: _GptHeader) -> list[Partition]:
    size = header.entry_size
    array = disk.read(header.entries_lba * header.sector, header.count * size)
    if zlib.crc32(array) != header.entries_crc:
        raise PartitionTableError("GPT partition entry array fails its CRC32 check")
    found: list[Partition] = []
    for index in range(header.count):
        raw = array[index * size : (index + 1) * size]
        if not any(raw[:16]):
            continue
        first, last = struct.unpack_from("<QQ", raw, 32)
        if not header.first_usable <= first <= last <= header.last_usable:
            raise PartitionTableError(
                f"GPT partition {index + 1} (LBA {first}-{last}) lies outside the usable area"
            )
        guid = str(uuid.UUID(bytes_le=raw[:16])).upper()
        name = raw[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        found.append(
            Partition(
                index + 1,
                first * header.sector,
                (last - first + 1) * header.sector,
                _GPT_TYPES.get(guid, guid),
                name,
            )
        )
    _check_overlaps(found, "GPT")
    return found


def _check_overlaps(parts: Sequence[Partition], kind: str) -> None:
    ordered = sorted(parts, key=lambda p: p.start)
    for before, after in itertools.pairwise(ordered):
        if before.start + before.size > after.start:
            raise PartitionTableError(
                f"{kind} partitions {before.number} and {after.number} overlap"
            )
