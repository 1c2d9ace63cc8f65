"""Naming the file system of a disk or partition by its magic, before any library sees it.

A superblock or boot sector is checked here for what the libraries would
trust (counts, sizes, where the FAT lies), so damage is reported as such and a
huge allocation table is refused before pyfatfs loads it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from strongroom.sources.image_files.errors import ImageFileSystemError, UnsupportedFileSystem
from strongroom.sources.image_files.view import DiskView

SUPPORTED = "strongroom reads ext2/3/4 and FAT"
MAX_FAT_BYTES = 32 << 20  # pyfatfs holds the whole FAT as a Python list (~36 bytes an entry)


@dataclass(frozen=True)
class Probe:
    """What `probe` found: its name, whether strongroom reads it, and what to warn about."""

    kind: str  # "ext4", "fat32", a foreign name such as "ntfs", or ""
    supported: bool = False
    fat: FatLayout | None = None
    notes: tuple[str, ...] = ()


_FOREIGN = (  # (offset, magic, name): enough to name what strongroom cannot read
    (3, b"NTFS    ", "ntfs"),
    (3, b"EXFAT   ", "exfat"),
    (0, b"XFSB", "xfs"),
    (0, b"LUKS\xba\xbe", "luks"),
    (0, b"hsqs", "squashfs"),
    (512, b"LABELONE", "lvm2"),
    (1024, b"\x10\x20\xf5\xf2", "f2fs"),
    (4086, b"SWAPSPACE2", "swap"),
    (0x10040, b"_BHRfS_M", "btrfs"),
    (32769, b"CD001", "iso9660"),
)


def probe(view: DiskView) -> Probe:
    """Name the file system by superblock or boot sector, checking what a library will trust."""
    superblock = view.pread(1024, 1024)
    if len(superblock) == 1024 and superblock[56:58] == b"\x53\xef":
        return _probe_ext(superblock)
    for offset, magic, name in _FOREIGN:
        if view.pread(offset, len(magic)) == magic:
            return Probe(name)
    layout = FatLayout.parse(view.pread(0, 512), view.size)
    return Probe(layout.kind, True, layout) if layout else Probe("")


def _probe_ext(sb: bytes) -> Probe:
    inodes, blocks, log_block, per_group, inodes_per_group = struct.unpack_from("<II16xI4xI4xI", sb)
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
    if incompat & 0x8:
        return Probe("an ext journal device")
    if not (inodes and blocks and per_group and inodes_per_group and log_block <= 6):
        raise ImageFileSystemError("ext superblock is damaged (zero counts or bad block size)")
    # Features beyond what ext3 knows make it ext4: blkid's rule.
    beyond_ext3 = incompat & ~0x16 or ro_compat & ~0x7
    kind = "ext4" if beyond_ext3 else "ext3" if compat & 0x4 else "ext2"
    notes = []
    if incompat & 0x4:
        notes.append(
            f"{kind} journal not replayed (unclean unmount): recent changes may be missing"
        )
    if incompat & 0x10000:
        notes.append(f"{kind} uses fscrypt: encrypted files and names read as ciphertext")
    return Probe(kind, True, notes=tuple(notes))


@dataclass(frozen=True)
class FatLayout:
    """The parts of a FAT boot sector that bound everything pyfatfs will read."""

    kind: str
    cluster: int  # bytes
    first_data: int  # bytes
    clusters: int

    @classmethod
    def parse(cls, boot: bytes, volume: int) -> FatLayout | None:
        """The layout, None when this is no FAT boot sector; raises when it is a damaged one."""
        if len(boot) < 512 or boot[510:512] != b"\x55\xaa" or boot[0] not in (0xEB, 0xE9):
            return None
        sector, per_cluster, reserved, fats, roots, total16, media, fat16 = struct.unpack_from(
            "<HBHBHHBH", boot, 11
        )
        total32, fat32 = struct.unpack_from("<II", boot, 32)
        if (
            sector not in (512, 1024, 2048, 4096)
            or per_cluster not in (1, 2, 4, 8, 16, 32, 64, 128)
            or not reserved
            or not 1 <= fats <= 4
            or not (media == 0xF0 or media >= 0xF8)
        ):
            return None
        total, fat_sectors = total16 or total32, fat16 or fat32
        first_data = reserved + fats * fat_sectors + -(-roots * 32 // sector)
        if not fat_sectors or first_data >= total or first_data * sector > volume:
            raise ImageFileSystemError("FAT boot sector is damaged (areas past the volume end)")
        clusters = (total - first_data) // per_cluster
        kind = "fat12" if clusters < 4085 else "fat16" if clusters < 65525 else "fat32"
        need = {"fat12": (clusters + 2) * 3 // 2, "fat16": (clusters + 2) * 2}.get(
            kind, (clusters + 2) * 4
        )
        if fat_sectors * sector < need or (kind == "fat32") != (roots == 0 and fat16 == 0):
            raise ImageFileSystemError(f"{kind} boot sector is damaged (FAT too small, misplaced)")
        if fat_sectors * sector > MAX_FAT_BYTES:
            raise UnsupportedFileSystem(
                f"{kind} allocation table of {fat_sectors * sector >> 20} MiB is larger than "
                f"the {MAX_FAT_BYTES >> 20} MiB strongroom reads"
            )
        return cls(kind, sector * per_cluster, first_data * sector, clusters)
