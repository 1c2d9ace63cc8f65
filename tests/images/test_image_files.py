"""Files inside an image point (ext4, FAT, a partitioned disk), listed, restored
and dumped straight from the repository, without restoring the image."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.images import BS, MiB, backup, needs, run, sparse_file

needs_ext = needs("mke2fs")
needs_fat = needs("mkfs.fat", "mcopy")

# relative path -> content; directories follow from the paths
TREE = {
    "hello.txt": b"hello from inside the image\n",
    "empty.dat": b"",
    "docs/readme.md": b"# docs\n" * 300,
    "docs/big.bin": random.Random(1).randbytes(1 * MiB + 7),
    "docs/zeros-then-data.bin": bytes(200_000) + random.Random(2).randbytes(5000),
    "docs/deeper/notes.txt": b"a line of notes\n" * 1000,
    "docs/deeper/tiny.bin": random.Random(3).randbytes(17),
    "media/photo.jpg": random.Random(4).randbytes(300_000),
}
DIRS = {"docs", "docs/deeper", "media", "emptydir"}


def make_tree(root: Path, symlink: bool = True) -> Path:
    for rel, data in TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "emptydir").mkdir(parents=True, exist_ok=True)
    os.chmod(root / "docs/deeper/notes.txt", 0o640)
    if symlink:
        os.symlink("docs/readme.md", root / "link-to-readme")
    return root


def ext4_image(path: Path, src: Path, size: str = "64M") -> Path:
    run("mke2fs", "-q", "-F", "-t", "ext4", "-d", src, path, size)
    return path


def fat_image(path: Path, src: Path, size_kib: int = 32 * 1024) -> Path:
    run("mkfs.fat", "-C", path, size_kib)
    run("mcopy", "-s", "-i", path, *sorted(str(p) for p in src.iterdir()), "::/")
    return path


def ls_paths(cli: CliRunner, point: str, *args: str) -> dict[str, dict[str, object]]:
    result = cli("ls", point, *args, "--json")
    assert result.rc == 0, result.err
    return {str(e["path"]): e for e in result.lines()}


def assert_tree_listed(entries: dict[str, dict[str, object]], symlink: bool) -> None:
    expected_files = {"/" + rel: len(data) for rel, data in TREE.items()}
    files = {p: e["size"] for p, e in entries.items() if e["type"] == "file"}
    assert files == expected_files
    dirs = {p for p, e in entries.items() if e["type"] == "dir"}
    assert {"/" + d for d in DIRS} <= dirs
    assert dirs - {"/" + d for d in DIRS} <= {"/lost+found"}
    if symlink:
        assert entries["/link-to-readme"]["type"] == "symlink"
        assert entries["/link-to-readme"]["link_target"] == "docs/readme.md"


def assert_restored_docs(target: Path, src: Path, check_modes: bool) -> None:
    restored = target / "docs"
    got = {str(p.relative_to(restored)): p.read_bytes() for p in restored.rglob("*") if p.is_file()}
    want = {rel[len("docs/") :]: data for rel, data in TREE.items() if rel.startswith("docs/")}
    assert got == want
    assert not (target / "media").exists() and not (target / "hello.txt").exists()
    if check_modes:
        for rel in want:
            a, b = os.stat(src / "docs" / rel), os.stat(restored / rel)
            assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode), rel
            assert int(a.st_mtime) == int(b.st_mtime), rel


@needs_ext
def test_ext4_image(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = make_tree(tmp_path / "src")
    img = ext4_image(tmp_path / "ext4.img", src)
    point = backup(cli, img, "--block-size", str(BS))["point_id"]

    entries = ls_paths(cli, point, "/")
    assert_tree_listed(entries, symlink=True)
    assert {e["filesystem"] for e in entries.values()} == {"ext4"}
    assert set(ls_paths(cli, point, "/docs/deeper")) == {
        "/docs/deeper/notes.txt",
        "/docs/deeper/tiny.bin",
    }

    target = tmp_path / "out"
    result = cli("restore", point, "--target", str(target), "--include", "/docs")
    assert result.rc == 0, result.err
    assert_restored_docs(target, src, check_modes=True)

    dump = cli("dump", point, "/docs/big.bin", binary=True)
    assert dump.rc == 0, dump.err
    assert dump.out == TREE["docs/big.bin"]


@needs_fat
def test_fat_image(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = make_tree(tmp_path / "src", symlink=False)
    img = fat_image(tmp_path / "fat.img", src)
    point = backup(cli, img, "--block-size", str(BS))["point_id"]

    entries = ls_paths(cli, point, "/")
    assert_tree_listed(entries, symlink=False)
    assert {str(e["filesystem"]).startswith("fat") for e in entries.values()} == {True}

    target = tmp_path / "out"
    result = cli("restore", point, "--target", str(target), "--include", "/docs")
    assert result.rc == 0, result.err
    assert_restored_docs(target, src, check_modes=False)

    dump = cli("dump", point, "/docs/deeper/notes.txt", binary=True)
    assert dump.rc == 0, dump.err
    assert dump.out == TREE["docs/deeper/notes.txt"]


def partitioned_disk(tmp_path: Path) -> Path:
    """MBR: partition 1 FAT (one file), partition 2 ext4 (the tree)."""
    disk = sparse_file(tmp_path / "disk.raw", 96 * MiB)
    p1_start, p1_size = 1 * MiB, 16 * MiB
    p2_start, p2_size = 17 * MiB, 64 * MiB
    layout = (
        "label: dos\n"
        f"start={p1_start // 512}, size={p1_size // 512}, type=c\n"
        f"start={p2_start // 512}, size={p2_size // 512}, type=83\n"
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout.encode(), check=True)
    first_src = tmp_path / "first"
    first_src.mkdir()
    (first_src / "ONLY-IN-1.TXT").write_bytes(b"partition one\n")
    part1 = fat_image(tmp_path / "p1.img", first_src, p1_size // 1024)
    part2 = ext4_image(tmp_path / "p2.img", make_tree(tmp_path / "src"), str(p2_size // 1024) + "K")
    with open(disk, "r+b") as out:
        for start, part in ((p1_start, part1), (p2_start, part2)):
            out.seek(start)
            out.write(part.read_bytes())
    return disk


@needs("mke2fs", "mkfs.fat", "mcopy", "sfdisk")
def test_partitioned_disk(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    disk = partitioned_disk(tmp_path)
    point = backup(cli, disk, "--block-size", str(BS))["point_id"]

    # Without --partition: the first readable one.
    assert set(ls_paths(cli, point, "/")) == {"/ONLY-IN-1.TXT"}
    entries = ls_paths(cli, point, "/", "--partition", "2")
    assert_tree_listed(entries, symlink=True)

    target = tmp_path / "out"
    result = cli(
        "restore", point, "--target", str(target), "--include", "/docs", "--partition", "2"
    )
    assert result.rc == 0, result.err
    assert_restored_docs(target, tmp_path / "src", check_modes=True)

    dump = cli("dump", point, "/hello.txt", "--partition", "2", binary=True)
    assert dump.rc == 0, dump.err
    assert dump.out == TREE["hello.txt"]
    missing = cli("ls", point, "/", "--partition", "3")
    assert missing.rc != 0 and "partition 3" in missing.err


@needs_ext
def test_ls_of_an_image_without_file_system(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "noise.raw"
    disk.write_bytes(random.Random(9).randbytes(2 * MiB))
    point = backup(cli, disk)["point_id"]
    result = cli("ls", point, "/")
    assert result.rc != 0
    assert "Traceback" not in result.err and "ext" in result.err
    assert json.dumps(result.err).count("strongroom: error:") == 1
