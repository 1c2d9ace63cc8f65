"""Damaged file systems and failing disks: one-line SourceErrors or warnings, never a hang.

Every test here runs under a watchdog (faulthandler) that ends the process if a
library loops, so a regression fails loudly instead of hanging CI.
"""

from __future__ import annotations

import faulthandler
import io
import random
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import SourceError, TransientStorageError
from strongroom.sources.image_files import (
    ImageFileSystemError,
    ImageReadError,
    UnsupportedFileSystem,
    extract,
    open_filesystem,
)
from tests.formats.images import CountingDisk, MiB, fat_tree, make_ext, make_fat, run

KiB = 1024


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def small_tree(root: Path) -> Path:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f").write_bytes(b"hi\n")
    (root / "d" / "mid").write_bytes(random.Random(3).randbytes(40_000))
    (root / "big").write_bytes(random.Random(4).randbytes(2 * MiB))
    (root / "l").symlink_to("d/e/f")
    for index in range(40):
        (root / "d" / f"n{index}").write_text(str(index))
    return root


@pytest.fixture(scope="session")
def ext_small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ext-damage")
    source = small_tree(folder / "src")
    return {kind: make_ext(folder / f"{kind}.img", source, kind, "4M") for kind in ("ext4", "ext2")}


@pytest.fixture(scope="session")
def fat16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fat-damage")
    return make_fat(folder / "fat16.img", fat_tree(folder / "src"), 16, 8, "-s", "2")


def exercise(data: bytes | bytearray) -> str:
    """Open, walk, stat and read (1 MiB of each file at most); SourceError is an outcome."""
    try:
        fs = open_filesystem(io.BytesIO(data))
        for entry in fs.walk():
            fs.stat(entry.path)
            if entry.type == "file":
                with fs.open(entry.path) as stream:
                    stream.read(MiB)
        return "ok"
    except SourceError as error:
        message = str(error)
        assert message and "\n" not in message, message
        return type(error).__name__


# --- ext -------------------------------------------------------------------------------


def _ext_regions(image: Path) -> list[tuple[int, int]]:
    """Superblock, group descriptors, the used start of the inode table, directory blocks."""
    dump = run("dumpe2fs", image)
    table = int(re.search(r"Inode table at (\d+)-", dump).group(1))  # type: ignore[union-attr]
    blocks = [
        int(b)
        for d in ("/", "/d", "/d/e")
        for b in run("debugfs", "-R", f"blocks {d}", image).split()
    ]
    regions = [(1024, 2048), (2048, 3072), (table * KiB, table * KiB + 16 * KiB)]
    return regions + [(b * KiB, (b + 1) * KiB) for b in blocks]


def test_ext_random_superblock_is_a_source_error(ext_small: dict[str, Path]) -> None:
    rnd = random.Random(1)
    data = bytearray(ext_small["ext4"].read_bytes())
    data[1024:2048] = rnd.randbytes(1024)
    with pytest.raises(UnsupportedFileSystem, match="no known file system"):
        open_filesystem(io.BytesIO(bytes(data)))
    for seed in range(20):
        rnd = random.Random(seed)
        data[1024:2048] = rnd.randbytes(1024)
        data[1024 + 56 : 1024 + 58] = b"\x53\xef"  # keep the magic: deeper
        exercise(data)


def test_ext_random_inode_table_and_directories(ext_small: dict[str, Path]) -> None:
    for kind, image in ext_small.items():
        clean = image.read_bytes()
        for index, (start, end) in enumerate(_ext_regions(image)[2:]):
            rnd = random.Random(index)
            data = bytearray(clean)
            data[start:end] = rnd.randbytes(end - start)
            exercise(data)
        root_inode = _ext_regions(image)[2][0] + 256  # inode 2
        data = bytearray(clean)
        data[root_inode : root_inode + 256] = random.Random(9).randbytes(256)
        assert exercise(data) != "ok", kind


def test_ext_directory_loop_is_cut(tmp_path: Path, ext_small: dict[str, Path]) -> None:
    image = tmp_path / "loop.img"
    image.write_bytes(ext_small["ext4"].read_bytes())
    run("debugfs", "-w", "-R", "link /d /d/e/loop", image)
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        paths = [e.path for e in fs.walk()]
    assert "/d/e/loop" in paths and "/d/e/loop/e" not in paths
    assert fs.warnings == ["directory loop: /d/e/loop is one of its own parents"]


def test_ext_journal_not_replayed_is_a_warning(tmp_path: Path, ext_small: dict[str, Path]) -> None:
    image = tmp_path / "dirty.img"
    image.write_bytes(ext_small["ext4"].read_bytes())
    run("debugfs", "-w", "-R", "feature needs_recovery", image)
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        assert fs.stat("/d/e/f").size == 3
    assert any("journal not replayed" in w for w in fs.warnings)


@settings(max_examples=40)
@given(data=st.data())
def test_ext_fuzzed_metadata(ext_small: dict[str, Path], data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(ext_small)))
    image = bytearray(_ext_clean(ext_small, kind))
    regions = _ext_region_cache(ext_small, kind)
    for _ in range(data.draw(st.integers(1, 48))):
        start, end = data.draw(st.sampled_from(regions))
        image[data.draw(st.integers(start, end - 1))] = data.draw(st.integers(0, 255))
    exercise(image)


_CACHE: dict[str, object] = {}


def _ext_clean(ext_small: dict[str, Path], kind: str) -> bytes:
    return _CACHE.setdefault(f"data-{kind}", ext_small[kind].read_bytes())  # type: ignore[return-value]


def _ext_region_cache(ext_small: dict[str, Path], kind: str) -> list[tuple[int, int]]:
    return _CACHE.setdefault(f"regions-{kind}", _ext_regions(ext_small[kind]))  # type: ignore[return-value]


# --- FAT -------------------------------------------------------------------------------


class FatLayout:
    def __init__(self, data: bytes) -> None:
        sector, per_cluster, reserved, fats, roots = struct.unpack_from("<HBHBH", data, 11)
        fat_sectors = struct.unpack_from("<H", data, 22)[0]
        self.fats = [(reserved + i * fat_sectors) * sector for i in range(fats)]
        self.data = (reserved + fats * fat_sectors) * sector + roots * 32
        self.cluster = sector * per_cluster

    def set_next(self, image: bytearray, cluster: int, value: int) -> None:
        for fat in self.fats:  # FAT16 entries
            struct.pack_into("<H", image, fat + 2 * cluster, value)

    def address(self, cluster: int) -> int:
        return self.data + (cluster - 2) * self.cluster


def clusters(image: Path, path: str) -> list[int]:
    found = []
    for first, last in re.findall(r"<(\d+)(?:-(\d+))?>", run("mshowfat", "-i", image, f"::{path}")):
        found += list(range(int(first), int(last or first) + 1))
    return found


def open_bytes(data: bytearray) -> object:
    return open_filesystem(io.BytesIO(bytes(data)))


def test_fat_file_chain_loop_and_escape_are_errors(fat16: Path) -> None:
    clean = fat16.read_bytes()
    layout, chain = FatLayout(clean), clusters(fat16, "/big.bin")
    for value, message in ((chain[0], "repeats"), (0xFF00, "ends at byte"), (0, "FREE")):
        data = bytearray(clean)
        layout.set_next(data, chain[5], value)
        fs = open_filesystem(io.BytesIO(data))
        assert fs.stat("/big.bin").size == 300_000
        with pytest.raises(ImageFileSystemError, match=message), fs.open("/big.bin") as stream:
            stream.read()


def test_fat_directory_chain_loop_is_an_error_and_walk_goes_on(fat16: Path) -> None:
    data = bytearray(fat16.read_bytes())
    chain = clusters(fat16, "/dir")
    FatLayout(data).set_next(data, chain[-1], chain[0])
    fs = open_filesystem(io.BytesIO(data))
    with pytest.raises(ImageFileSystemError, match=r"repeats|too long"):
        fs.list("/dir")
    paths = [e.path for e in fs.walk()]
    assert "/dir" in paths and "/big.bin" in paths
    assert any("/dir" in w for w in fs.warnings)


def test_fat_directory_pointing_at_its_parent_is_cut(fat16: Path) -> None:
    data = bytearray(fat16.read_bytes())
    parent = clusters(fat16, "/dir")[0]
    entry = data.find(b"SUB        \x10")
    assert entry > 0
    struct.pack_into("<H", data, entry + 26, parent)
    fs = open_filesystem(io.BytesIO(data))
    paths = [e.path for e in fs.walk()]
    assert "/dir/sub" in paths and "/dir/sub/many" not in paths
    assert fs.warnings == ["directory loop: /dir/sub is one of its own parents"]


def test_fat_damaged_boot_sectors(fat16: Path) -> None:
    clean = fat16.read_bytes()
    data = bytearray(clean)
    data[11:13] = b"\0\0"  # bytes per sector: no longer a FAT boot sector
    with pytest.raises(UnsupportedFileSystem):
        open_bytes(data)
    data = bytearray(clean)
    data[22:24] = b"\0\0"  # sectors per FAT
    with pytest.raises(ImageFileSystemError, match="damaged"):
        open_bytes(data)
    data = bytearray(clean)
    data[19:21] = (50).to_bytes(2, "little")  # a volume smaller than its FATs
    with pytest.raises(ImageFileSystemError, match="damaged"):
        open_bytes(data)
    data[19:21] = (2000).to_bytes(2, "little")  # FAT16 read as a small FAT12
    exercise(data)


@settings(max_examples=40)
@given(data=st.data())
def test_fat_fuzzed_metadata(fat16: Path, data: st.DataObject) -> None:
    clean = _CACHE.setdefault("fat16", fat16.read_bytes())
    image = bytearray(clean)  # type: ignore[arg-type]
    layout = FatLayout(image)
    regions = [
        (0, 512),
        (layout.fats[0], layout.fats[0] + 2048),
        (layout.data - 16 * KiB, layout.data),
        (layout.data, layout.data + 8 * layout.cluster),
    ]
    for _ in range(data.draw(st.integers(1, 48))):
        start, end = data.draw(st.sampled_from(regions))
        image[data.draw(st.integers(start, end - 1))] = data.draw(st.integers(0, 255))
    exercise(image)


# --- the disk itself failing -------------------------------------------------------------


@pytest.mark.parametrize("which", ["ext4", "fat16"])
def test_disk_errors_pass_through_unchanged(
    which: str, ext_small: dict[str, Path], fat16: Path
) -> None:
    image, big = (ext_small["ext4"], "/big") if which == "ext4" else (fat16, "/big.bin")
    with CountingDisk(image) as disk:
        fs = open_filesystem(disk)
        entry = fs.stat(big)
        stream = fs.open(entry.path)
        failure = TransientStorageError("the network is down")
        disk.fail_with = failure
        with pytest.raises(TransientStorageError) as raised:
            stream.read()
        assert raised.value is failure
        disk.fail_with = OSError(5, "Input/output error")
        with pytest.raises(ImageReadError, match="cannot read the disk image"):
            fs.open(entry.path).read()


# --- restoring from damaged file systems ------------------------------------------------


def test_names_that_could_escape_are_skipped(ext_small: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(ext_small["ext2"].read_bytes())
    at = data.find(b"\x03\x01mid")  # name length 3, type "regular file", the name
    assert at > 0
    at += 2
    data[at : at + 3] = b"../"  # a directory entry named "../"
    fs = open_filesystem(io.BytesIO(data))
    assert "/d/e" in [e.path for e in fs.list("/d")]
    extract(fs, "/d", str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]
    assert fs.warnings == ["skipped an entry named '../' in /d"]


def test_a_file_that_breaks_off_is_not_left_half_restored(fat16: Path, tmp_path: Path) -> None:
    data = bytearray(fat16.read_bytes())
    chain = clusters(fat16, "/big.bin")
    FatLayout(data).set_next(data, chain[5], chain[1])
    fs = open_filesystem(io.BytesIO(data))
    with pytest.raises(ImageFileSystemError, match=r"cannot read /big.bin: .* repeats cluster"):
        extract(fs, "/big.bin", str(tmp_path))
    assert not (tmp_path / "big.bin").exists()


def test_extract_never_replaces_a_directory_with_a_file(fat16: Path, tmp_path: Path) -> None:
    (tmp_path / "big.bin").mkdir()
    with open(fat16, "rb") as disk, pytest.raises(IsADirectoryError):
        extract(open_filesystem(disk), "/big.bin", str(tmp_path))
