"""Files inside ext2/3/4 and FAT12/16/32 images agree with the trees the real tools put there."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from strongroom.errors import PathNotFound, SourceError
from strongroom.sources.image_files import (
    ImageEntry,
    ImageFileSystem,
    ImageFileSystemError,
    extract,
    open_filesystem,
)
from tests.formats.images import (
    CountingDisk,
    Local,
    MiB,
    digest_of,
    ext_tree,
    fat_tree,
    make_ext,
    make_fat,
    run,
    snapshot,
)

EXT_KINDS = ("ext4", "ext3", "ext2")
Opener = Callable[[Path], ImageFileSystem]


@pytest.fixture(scope="session")
def ext_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ext_tree(tmp_path_factory.mktemp("ext-source"))


@pytest.fixture(scope="session")
def fat_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fat_tree(tmp_path_factory.mktemp("fat-source"))


@pytest.fixture(scope="session")
def ext_images(tmp_path_factory: pytest.TempPathFactory, ext_source: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ext")
    return {kind: make_ext(folder / f"{kind}.img", ext_source, kind) for kind in EXT_KINDS}


@pytest.fixture(params=EXT_KINDS)
def ext_image(request: pytest.FixtureRequest, ext_images: dict[str, Path]) -> tuple[str, Path]:
    kind: str = request.param
    return kind, ext_images[kind]


@pytest.fixture(
    scope="session", params=[(12, 4), (16, 32), (32, 64)], ids=["fat12", "fat16", "fat32"]
)
def fat_image(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fat_source: Path
) -> tuple[str, Path]:
    bits, size = request.param
    image = make_fat(tmp_path_factory.mktemp(f"fat{bits}") / "fs.img", fat_source, bits, size)
    return f"fat{bits}", image


@pytest.fixture(params=["file", "counting"])
def opened(request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Open an image through a plain file or through a byte-counting io.RawIOBase."""
    handles: list[BinaryIO | CountingDisk] = []

    def open_image(path: Path) -> ImageFileSystem:
        disk = open(path, "rb") if request.param == "file" else CountingDisk(path)  # noqa: SIM115
        handles.append(disk)
        return open_filesystem(disk)

    yield open_image
    for handle in handles:
        handle.close()


def expected_order(local: dict[str, Local]) -> list[str]:
    """Depth first, siblings sorted by name: what walk promises."""
    children: dict[str, list[str]] = {}
    for path in local:
        children.setdefault(os.path.dirname(path), []).append(path)
    order: list[str] = []

    def visit(parent: str) -> None:
        for path in sorted(children.get(parent, []), key=os.path.basename):
            order.append(path)
            visit(path)

    visit("/")
    return order


def assert_same(
    fs: ImageFileSystem, entries: list[ImageEntry], local: dict[str, Local], fat: bool
) -> None:
    assert [e.path for e in entries] == expected_order(local)
    for entry in entries:
        want = local[entry.path]
        assert entry.type == want.type, entry.path
        if fat:
            assert entry.mode == (0o755 if want.type == "dir" else 0o644), entry.path
            if want.type == "file":
                assert abs(entry.mtime - want.mtime) < 2, entry.path
        else:
            assert entry.mode == want.mode, entry.path
            assert int(entry.mtime) == want.mtime, entry.path
            assert entry.target == want.target, entry.path
            assert (entry.uid, entry.gid) == (os.getuid(), os.getgid()), entry.path  # mke2fs -d
        if want.type == "file":
            assert entry.size == want.size, entry.path
            with fs.open(entry.path) as stream:
                assert digest_of(stream) == want.digest, entry.path


# --- ext2/3/4 ---------------------------------------------------------------------------


def test_ext_walk_stat_and_open_match_the_source(
    ext_image: tuple[str, Path], ext_source: Path, opened: Opener
) -> None:
    kind, image = ext_image
    fs = opened(image)
    assert fs.kind == kind
    entries = [e for e in fs.walk() if not e.path.startswith("/lost+found")]
    assert_same(fs, entries, snapshot(ext_source), fat=False)
    assert fs.stat("/fifo").type == "other"
    assert fs.warnings == []


def test_ext_list_stat_and_paths(ext_image: tuple[str, Path], ext_source: Path) -> None:
    _, image = ext_image
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        assert [e.path for e in fs.list("/a/b")] == ["/a/b/c"]
        names = [e.path for e in fs.list("/many")]
        assert names == sorted(names) and len(names) == 2000
        assert fs.stat("a//b/./c/../c/deep.txt").path == "/a/b/c/deep.txt"
        assert fs.stat("/").type == "dir"
        assert fs.stat("/many/f1234").size == len("1234\n")
        assert fs.stat("/longlink").target == "x" * 100 + "/" + "y" * 100
        with pytest.raises(PathNotFound):
            fs.stat("/a/nope")
        with pytest.raises(PathNotFound):
            fs.stat("/one/below-a-file")
        with pytest.raises(PathNotFound):
            fs.list("/link/through-a-symlink")
        with pytest.raises(ImageFileSystemError, match="not a directory"):
            fs.list("/one")
        with pytest.raises(ImageFileSystemError, match="not a regular file"):
            fs.open("/a")
        with fs.open("/big.bin") as stream:
            stream.seek(2 * MiB + 5)
            tail = stream.read()
        assert tail == (ext_source / "big.bin").read_bytes()[2 * MiB + 5 :]


def test_ext4_fixture_has_htree_and_deep_extent_tree(ext_images: dict[str, Path]) -> None:
    image = ext_images["ext4"]
    assert "Flags: 0x81000" in run("debugfs", "-R", "stat /many", image)  # EXTENTS | INDEX
    assert " 1/ 1 " in run("debugfs", "-R", "ex /fragmented.bin", image)  # a depth-1 leaf


def test_ext4_extract_everything(
    ext_images: dict[str, Path], ext_source: Path, tmp_path: Path
) -> None:
    image = ext_images["ext4"]
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        written = extract(fs, "/", str(tmp_path / "out"))
    source = snapshot(ext_source)
    restored = snapshot(tmp_path / "out")
    del source["/fifo"], restored["/lost+found"]
    assert restored == source
    assert written == sum(e.size for e in source.values() if e.type == "file")
    assert fs.warnings == ["not restored: /fifo (other)"]
    assert (tmp_path / "out" / "sparse.bin").stat().st_blocks * 512 < MiB  # holes stay holes


def test_ext_extract_one_file_a_subtree_and_never_follow_symlinks(
    ext_image: tuple[str, Path], ext_source: Path, tmp_path: Path
) -> None:
    _, image = ext_image
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "exec.sh").symlink_to(outside)
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        assert extract(fs, "/exec.sh", str(tmp_path / "one")) == 18
        assert extract(fs, "/a", str(tmp_path / "tree")) == 5
        extract(fs, "/link", str(tmp_path / "links"))
    assert outside.read_text() == "keep"
    got = snapshot(tmp_path / "one")["/exec.sh"]
    assert got == snapshot(ext_source)["/exec.sh"]
    want = {"/a" + k: v for k, v in snapshot(ext_source / "a").items()}
    want["/a"] = snapshot(ext_source)["/a"]
    assert snapshot(tmp_path / "tree") == want
    assert os.readlink(tmp_path / "links" / "link") == "a/b/c/deep.txt"


@pytest.mark.parametrize("kind", EXT_KINDS)
def test_extracting_a_small_ext_file_reads_little_of_the_image(
    kind: str, ext_images: dict[str, Path], tmp_path: Path
) -> None:
    with CountingDisk(ext_images[kind]) as disk:
        fs = open_filesystem(disk)
        assert extract(fs, "/a/b/c/deep.txt", str(tmp_path)) == 5
        assert fs.stat("/many/f1999").size == 5  # a lookup in the 2000-entry directory
        assert disk.bytes_read < 2 * MiB, disk.bytes_read


# --- FAT12/16/32 -----------------------------------------------------------------------


def test_fat_walk_stat_and_open_match_the_source(
    fat_image: tuple[str, Path], fat_source: Path, opened: Opener
) -> None:
    kind, image = fat_image
    fs = opened(image)
    assert fs.kind == kind
    assert_same(fs, list(fs.walk()), snapshot(fat_source), fat=True)
    assert fs.warnings == []


def test_fat_names_are_found_in_any_case(fat_image: tuple[str, Path]) -> None:
    _, image = fat_image
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        assert fs.stat("/DIR/SUB/DEEP.TXT").path == "/dir/sub/deep.txt"
        assert fs.stat("/upper.txt").path == "/UPPER.TXT"
        assert fs.stat("/long file name Ü.TXT").path == "/Long File Name ü.txt"
        assert [e.path for e in fs.list("/dir")] == ["/dir/many", "/dir/sub"]
        with pytest.raises(PathNotFound):
            fs.stat("/dir/none")


def test_fat_extract_everything(
    fat_image: tuple[str, Path], fat_source: Path, tmp_path: Path
) -> None:
    _, image = fat_image
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        written = extract(fs, "/", str(tmp_path / "out"))
    source, restored = snapshot(fat_source), snapshot(tmp_path / "out")
    assert sorted(restored) == sorted(source)
    for path, want in source.items():
        got = restored[path]
        assert (got.type, got.size, got.digest) == (want.type, want.size, want.digest), path
        if want.type == "file":
            assert abs(got.mtime - want.mtime) < 2 and got.mode == 0o644, path
    assert written == sum(e.size for e in source.values())


def test_extracting_a_small_fat_file_reads_little_of_the_image(
    fat_image: tuple[str, Path], tmp_path: Path
) -> None:
    _, image = fat_image
    with CountingDisk(image) as disk:
        fs = open_filesystem(disk)
        assert extract(fs, "/dir/sub/deep.txt", str(tmp_path)) == 5
        assert fs.stat("/dir/many/file299.txt").size == 4
        assert disk.bytes_read < 2 * MiB, disk.bytes_read


def test_fat_read_only_files_and_fragmented_chains(tmp_path: Path, fat_source: Path) -> None:
    image = make_fat(tmp_path / "fs.img", fat_source, 16, 32)
    parts = {name: os.urandom(size) for name, size in (("a", 9000), ("b", 3000), ("c", 40000))}
    for name, data in parts.items():
        (tmp_path / name).write_bytes(data)
    run("mcopy", "-i", image, tmp_path / "a", tmp_path / "b", "::/")
    run("mdel", "-i", image, "::/a")
    run("mcopy", "-i", image, tmp_path / "c", "::/")
    run("mattrib", "-i", image, "+r", "::/b")
    assert "> <" in run("mshowfat", "-i", image, "::/c")  # really in more than one run
    with open(image, "rb") as disk:
        fs = open_filesystem(disk)
        with fs.open("/c") as stream:
            assert stream.read() == parts["c"]
        assert fs.stat("/b").mode == 0o444


def test_errors_are_source_errors() -> None:
    assert issubclass(ImageFileSystemError, SourceError)
    assert issubclass(PathNotFound, FileNotFoundError)
