"""atomic_write and PendingFile: a failed or interrupted write leaves the old file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

from strongroom.atomic import PendingFile, atomic_write, durable_replace


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "folder"
    path.mkdir()
    return path


def test_replaces_the_file_and_leaves_no_temporary(folder: Path) -> None:
    target = folder / "state.json"
    target.write_bytes(b"old")
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(folder)) == ["state.json"]
    assert os.stat(target).st_mode & 0o777 == 0o600


def test_a_failing_writer_keeps_the_old_content(folder: Path) -> None:
    target = folder / "state.json"
    target.write_bytes(b"old")

    def writer(f: BinaryIO) -> None:
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, writer)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(folder)) == ["state.json"]


def test_exclusive_refuses_an_existing_name(folder: Path) -> None:
    target = folder / "obj"
    target.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        atomic_write(target, lambda f: f.write(b"second"), exclusive=True)
    assert target.read_bytes() == b"first"
    assert os.listdir(folder) == ["obj"]


def test_temp_dir_holds_the_temporary(folder: Path) -> None:
    temps = folder / "tmp"
    temps.mkdir()
    seen: list[list[str]] = []
    atomic_write(folder / "obj", lambda f: seen.append(os.listdir(temps)), temp_dir=temps)
    assert len(seen[0]) == 1
    assert os.listdir(temps) == []


def test_a_trailing_skip_is_a_hole_of_the_right_size(folder: Path) -> None:
    pending = PendingFile(folder)
    pending.write(b"x")
    pending.skip(1 << 20)
    pending.commit(folder / "sparse")
    data = (folder / "sparse").read_bytes()
    assert data == b"x" + bytes(1 << 20)


def test_a_writer_that_seeks_back_keeps_its_length(folder: Path) -> None:
    """A VHD writer goes back to patch its header: commit must not cut the file there."""

    def writer(f: BinaryIO) -> None:
        f.write(bytes(1000))
        f.seek(0)
        f.write(b"head")

    atomic_write(folder / "disk.vhd", writer)
    assert (folder / "disk.vhd").read_bytes() == b"head" + bytes(996)


def test_durable_replace_moves_over(folder: Path) -> None:
    (folder / "a").write_bytes(b"a")
    (folder / "b").write_bytes(b"b")
    durable_replace(folder / "a", folder / "b")
    assert os.listdir(folder) == ["b"]
    assert (folder / "b").read_bytes() == b"a"
