"""Names a guest wrote into its own file system: whatever they are, listing skips
the impossible ones and second copies, and extraction never leaves its target.

A small in-memory adapter stands in for a damaged ext4/FAT (the real readers
are exercised by tests/sources); it yields exactly the names it is given.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from strongroom.sources.image_files import extract
from strongroom.sources.image_files.entry import ImageEntry
from strongroom.sources.image_files.tree import FileReader, TreeFileSystem, join_path
from strongroom.sources.image_files.view import DiskView
from tests.helpers.hostile import snapshot

Spec = tuple[str, str, Any]  # (name, "file" | "dir" | "symlink", content | children | target)


class FakeFileSystem(TreeFileSystem):
    kind = "fake"

    def __init__(self, root: list[Spec]) -> None:
        super().__init__(DiskView(io.BytesIO(b""), 0, 0), "the disk")
        self.root_children = root

    def _root(self) -> tuple[ImageEntry, Any]:
        return ImageEntry("/", "dir", 0, 0o755, 0.0), ("dir", self.root_children, 1)

    def _children(self, entry: ImageEntry, node: Any) -> list[tuple[str, ImageEntry, Any]]:
        kids = []
        for i, (name, kind, payload) in enumerate(node[1]):
            path = join_path(entry.path, name)
            size = len(payload) if kind == "file" else 0
            target = payload if kind == "symlink" else ""
            key = node[2] * 100 + i + 1
            kids.append(
                (
                    name,
                    ImageEntry(path, kind, size, 0o4755, 1e9, 0, 0, target),
                    (kind, payload, key),
                )
            )
        return kids

    def _key(self, node: Any) -> int:
        return int(node[2])

    def _reader(self, entry: ImageEntry, node: Any) -> io.RawIOBase:
        data = node[1]
        return FileReader(self, entry, lambda offset, size: data[offset : offset + size])


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "world"
    outside = root / "outside"
    outside.mkdir(parents=True)
    (outside / "victim").write_bytes(b"victim\n")
    target = root / "target"
    target.mkdir()
    os.utime(root, ns=(1, 1))
    return root, target, outside


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "x\0y"])
def test_impossible_names_are_skipped_with_a_warning(
    world: tuple[Path, Path, Path], name: str
) -> None:
    root, target, _ = world
    fs = FakeFileSystem([(name, "dir", [("x", "file", b"attack\n")]), ("ok", "file", b"ok\n")])
    assert [e.path for e in fs.list("/")] == ["/ok"]
    before = snapshot(root, target)
    extract(fs, "/", str(target))
    assert snapshot(root, target) == before
    assert os.listdir(target) == ["ok"]
    shown = name.replace("\0", "\\x00")
    assert fs.warnings == [f"skipped an entry named '{shown}' in /"]


@pytest.mark.parametrize("order", ["link-first", "dir-first"])
def test_a_second_entry_of_the_same_name_is_skipped(
    world: tuple[Path, Path, Path], order: str
) -> None:
    """A symlink `evl` to the outside and a directory `evl` holding `victim`:
    only the first is kept, so nothing is written through the link."""
    root, target, outside = world
    link: Spec = ("evl", "symlink", str(outside))
    folder: Spec = ("evl", "dir", [("victim", "file", b"attack\n")])
    fs = FakeFileSystem([link, folder] if order == "link-first" else [folder, link])
    before = snapshot(root, target)
    extract(fs, "/", str(target))
    assert snapshot(root, target) == before
    assert fs.warnings == ["skipped a second entry named 'evl' in /"]
    if order == "link-first":
        assert os.readlink(target / "evl") == str(outside)
    else:
        assert (target / "evl" / "victim").read_bytes() == b"attack\n"


def test_names_with_escapes_are_kept_and_warned_escaped(world: tuple[Path, Path, Path]) -> None:
    _, target, _ = world
    evil = "\x1b]0;pwned\x07"
    fs = FakeFileSystem([(evil, "file", b"x"), ("..", "file", b"y"), (evil, "file", b"z")])
    extract(fs, "/", str(target))
    assert (target / evil).read_bytes() == b"x"
    assert all("\x1b" not in w for w in fs.warnings)
    assert "skipped a second entry named '\\x1b]0;pwned\\x07' in /" in fs.warnings
