"""Incremental backups read only what changed, and still restore exactly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.compare import walk_differences
from tests.helpers.inotify import FileReads
from tests.helpers.marks import needs_root
from tests.helpers.tree import make_small_tree, random_bytes, write_file


def _make_source(root: Path) -> dict[str, bytes]:
    files = make_small_tree(root)
    for i in range(40):
        files[f"many/{i % 4}/f{i:02}.dat"] = data = random_bytes(1000 + 3000 * i, i)
        write_file(root / f"many/{i % 4}/f{i:02}.dat", data)
    files["big.bin"] = random_bytes(6 * 1024 * 1024, 99)
    write_file(root / "big.bin", files["big.bin"])
    return files


def test_unchanged_tree_reads_no_file(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    files = _make_source(src)
    with FileReads(src) as watch:
        first = cli("backup", str(src), "--json")
        assert first.rc == 0, first.err
        # The watch sees reads: the first backup reads every non-empty file.
        assert watch.reads() == {rel for rel, data in files.items() if data}
    s = first.summary()
    assert s["files_new"] == s["total_files"] == len(files)
    assert s["bytes_read"] == s["total_bytes"] == sum(len(d) for d in files.values())

    with FileReads(src) as watch:
        second = cli("backup", str(src), "--json")
        assert second.rc == 0, second.err
        assert watch.reads() == set()
    s = second.summary()
    assert s["bytes_read"] == 0
    assert s["files_unmodified"] == s["total_files"] == len(files)
    assert s["files_new"] == s["files_changed"] == 0
    assert s["parent"] == first.summary()["point_id"]
    assert s["data_added"] < 64 * 1024  # at most a few trees (directory atimes moved)


def test_one_changed_file_is_the_only_one_read(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    files = _make_source(src)
    assert cli("backup", str(src)).rc == 0
    changed = "many/2/f10.dat"
    with open(src / changed, "ab") as f:
        f.write(b"one more line\n")
    new_size = len(files[changed]) + 14

    with FileReads(src) as watch:
        result = cli("backup", str(src), "--json")
        assert result.rc == 0, result.err
        assert watch.reads() == {changed}
    s = result.summary()
    assert s["files_changed"] == 1
    assert s["files_unmodified"] == len(files) - 1
    assert s["bytes_read"] == new_size
    assert s["data_added"] > 0

    dump = cli("dump", "latest", str(src / changed), binary=True)
    assert dump.rc == 0 and dump.out == files[changed] + b"one more line\n"


def test_content_change_that_keeps_size_and_mtime_is_read(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """An editor that restores the mtime cannot hide a change: the ctime moved."""
    src = tmp_path / "src"
    files = _make_source(src)
    assert cli("backup", str(src)).rc == 0
    target = src / "many/1/f09.dat"
    before = os.stat(target)
    target.write_bytes(bytes(b ^ 0xFF for b in files["many/1/f09.dat"]))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(target).st_size == before.st_size

    result = cli("backup", str(src), "--json")
    assert result.summary()["files_changed"] == 1
    dump = cli("dump", "latest", str(target), binary=True)
    assert dump.out == target.read_bytes()


@pytest.mark.root
@needs_root  # chown
def test_incremental_after_many_kinds_of_change_restores_exactly(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    _make_source(src)
    os.link(src / "a.txt", src / "a_link")
    assert cli("backup", str(src)).rc == 0

    os.chmod(src / "many/0/f00.dat", 0o600)  # mode only
    os.setxattr(src / "many/0/f04.dat", "user.new", b"attr")  # xattr only
    os.chown(src / "many/1/f01.dat", 4321, 8765)  # owner only
    os.utime(src / "many/1/f05.dat", ns=(1_000_000_001, 2_000_000_002))  # times only
    with open(src / "big.bin", "r+b") as f:  # content in the middle, same size
        f.seek(3 * 1024 * 1024)
        f.write(b"CHANGED")
    (src / "sub/deeper/c.txt").unlink()  # removed
    write_file(src / "sub/new.txt", b"new file\n")  # added
    (src / "other/e.txt").unlink()
    (src / "other/e.txt").mkdir()  # a file became a directory
    shutil.rmtree(src / "emptydir")
    write_file(src / "emptydir", b"a directory became a file\n")
    os.link(src / "many/3/f03.dat", src / "many/3/f03.link")  # a new hard link to an old file
    os.unlink(src / "a_link")  # a hard link group shrank to one
    os.rename(src / "many/2/f02.dat", src / "many/2/renamed.dat")

    result = cli("backup", str(src), "--json")
    assert result.rc == 0, result.err
    s = result.summary()
    assert s["files_unmodified"] > 20  # most files were still not read
    target = tmp_path / "restore"
    assert cli("restore", "latest", "--target", str(target)).rc == 0
    assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []
