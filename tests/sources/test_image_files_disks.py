"""Whole disks: choosing the partition, naming what cannot be read, staying inside the window."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from strongroom.formats.partitions import PartitionTableError
from strongroom.sources.image_files import (
    DiskView,
    ImageFileSystemError,
    UnsupportedFileSystem,
    extract,
    open_filesystem,
)
from tests.formats.images import (
    CountingDisk,
    MiB,
    blank,
    ext_tree,
    fat_tree,
    make_ext,
    make_fat,
    place,
    sfdisk,
)

SECTOR = 512


@pytest.fixture(scope="session")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return (
        ext_tree(tmp_path_factory.mktemp("ext-source"), many=20),
        fat_tree(tmp_path_factory.mktemp("fat-source")),
    )


def _ntfs_boot_sector() -> bytes:
    return (b"\xeb\x52\x90NTFS    " + bytes(499)) + b"\x55\xaa"


@pytest.fixture(scope="session")
def mbr_disk(tmp_path_factory: pytest.TempPathFactory, trees: tuple[Path, Path]) -> Path:
    """1: ext4, 2: FAT16, 3: extended with 5: FAT12, 6: "NTFS", 7: nothing."""
    folder = tmp_path_factory.mktemp("mbr")
    disk = blank(folder / "disk.img", 80 * MiB)
    sfdisk(
        disk,
        "label: dos\n"
        "start=2048, size=32768, type=83\n"
        "start=34816, size=65536, type=6\n"
        "start=100352, size=59392, type=5\n"
        "start=102400, size=8192, type=1\n"
        "start=112640, size=8192, type=7\n"
        "start=122880, size=8192, type=83\n",
    )
    ext_source, fat_source = trees
    place(disk, make_ext(folder / "p1.img", ext_source, "ext4", "16M"), 2048 * SECTOR)
    place(disk, make_fat(folder / "p2.img", fat_source, 16, 32), 34816 * SECTOR)
    place(disk, make_fat(folder / "p5.img", fat_source, 12, 4), 102400 * SECTOR)
    with open(disk, "r+b") as out:
        out.seek(112640 * SECTOR)
        out.write(_ntfs_boot_sector())
    return disk


@pytest.fixture(scope="session")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory, trees: tuple[Path, Path]) -> Path:
    """1: empty (BIOS boot), 2: EFI FAT32, 3: linux ext2."""
    folder = tmp_path_factory.mktemp("gpt")
    disk = blank(folder / "disk.img", 64 * MiB)
    sfdisk(
        disk,
        "label: gpt\n"
        "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n"
        "start=4096, size=81920, type=uefi, name=EFI\n"
        "start=86016, size=32768, type=linux, name=root\n",
    )
    ext_source, fat_source = trees
    place(disk, make_fat(folder / "p2.img", fat_source, 32, 40), 4096 * SECTOR)
    place(disk, make_ext(folder / "p3.img", ext_source, "ext2", "16M"), 86016 * SECTOR)
    return disk


def kind_of(disk: Path, partition: int | None = None) -> str:
    with open(disk, "rb") as stream:
        return open_filesystem(stream, partition).kind


def test_mbr_disk_partitions(mbr_disk: Path) -> None:
    assert kind_of(mbr_disk) == "ext4"
    assert kind_of(mbr_disk, 1) == "ext4"
    assert kind_of(mbr_disk, 2) == "fat16"
    assert kind_of(mbr_disk, 5) == "fat12"
    with open(mbr_disk, "rb") as stream:
        fs = open_filesystem(stream, 5)
        assert fs.stat("/dir/sub/deep.txt").size == 5


@pytest.mark.parametrize(
    ("partition", "error", "message"),
    [
        (6, UnsupportedFileSystem, "partition 6 holds ntfs; strongroom reads ext2/3/4 and FAT"),
        (
            7,
            UnsupportedFileSystem,
            r"partition 7 holds no known file system \(partition type linux",
        ),
        (3, ImageFileSystemError, "partition 3 is an extended partition"),
        (9, ImageFileSystemError, "the disk has no partition 9"),
        (0, UnsupportedFileSystem, "the disk holds no known file system"),
    ],
)
def test_mbr_disk_refusals_name_what_was_found(
    mbr_disk: Path, partition: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        kind_of(mbr_disk, partition)
    assert "\n" not in str(raised.value)


def test_gpt_disk_skips_partitions_without_a_file_system(gpt_disk: Path, tmp_path: Path) -> None:
    assert kind_of(gpt_disk) == "fat32"
    assert kind_of(gpt_disk, 3) == "ext2"
    with CountingDisk(gpt_disk) as disk:
        fs = open_filesystem(disk, 3)
        assert extract(fs, "/a/b/c/deep.txt", str(tmp_path)) == 5
        assert (tmp_path / "deep.txt").read_bytes() == b"deep\n"
        assert disk.bytes_read < MiB


def test_no_supported_partition_lists_what_each_holds(tmp_path: Path) -> None:
    disk = blank(tmp_path / "disk.img", 8 * MiB)
    sfdisk(disk, "label: dos\nstart=2048, size=4096, type=7\nstart=6144, size=4096, type=83\n")
    with open(disk, "r+b") as out:
        out.seek(2048 * SECTOR)
        out.write(_ntfs_boot_sector())
    with pytest.raises(UnsupportedFileSystem, match="partition 1 holds ntfs, partition 2 holds no"):
        kind_of(disk)


def test_a_damaged_table_is_reported(gpt_disk: Path, tmp_path: Path) -> None:
    data = bytearray(gpt_disk.read_bytes())
    data[SECTOR + 16] ^= 1
    data[len(data) - SECTOR + 16] ^= 1
    with pytest.raises(PartitionTableError, match="CRC32"):
        open_filesystem(io.BytesIO(bytes(data)))


def test_a_bare_fat_file_system_whose_boot_code_looks_like_a_table(
    tmp_path: Path, trees: tuple[Path, Path]
) -> None:
    image = make_fat(tmp_path / "fat.img", trees[1], 12, 4)
    data = bytearray(image.read_bytes())
    data[446 + 4] = 0x83  # a "partition" of boot code that holds no file system
    data[446 + 8 : 446 + 16] = (100).to_bytes(4, "little") + (50).to_bytes(4, "little")
    fs = open_filesystem(io.BytesIO(bytes(data)))
    assert fs.kind == "fat12"


def test_disk_view_stays_inside_its_window() -> None:
    reads: list[tuple[int, int]] = []

    class Base(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            reads.append((self.tell(), size or 0))
            return super().read(size)

    base = Base(bytes(range(256)) * 64)  # 16 KiB
    view = DiskView(base, 1000, 5000)
    assert view.pread(4990, 100) == (bytes(range(256)) * 64)[5990:6000]
    assert view.pread(6000, 10) == b""
    view.seek(-10, io.SEEK_END)
    assert view.read(100) == (bytes(range(256)) * 64)[5990:6000]
    assert view.read(1) == b""
    with pytest.raises(OSError):
        view.seek(-1)
    assert all(start >= 1000 and start + size <= 6000 for start, size in reads), reads
    assert not view.writable() and view.readable() and view.seekable()
