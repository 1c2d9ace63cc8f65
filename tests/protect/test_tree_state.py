"""protect/tree_state.py: scans of real trees, and what changed between two scans."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from strongroom.model.tree import CHARDEV, DIR, FIFO, FILE, SYMLINK
from strongroom.protect.tree_state import (
    ROOT,
    Entry,
    Scan,
    Tree,
    TreeChanges,
    depth,
    diff_trees,
    load_tree,
    save_tree,
    scan_tree,
    with_xattrs,
)
from tests.helpers.cli import NOBODY
from tests.helpers.marks import needs_root
from tests.helpers.tree import write_file


def scan(root: Path) -> Tree:
    result = scan_tree(str(root))
    assert result.warnings == []
    return result.tree


def changes_after(root: Path, change: Callable[[], object]) -> tuple[TreeChanges, Tree, Tree]:
    """diff_trees of the scans before and after `change()`."""
    old = scan(root)
    change()
    new = scan(root)
    return diff_trees(old, new), old, new


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "t"
    write_file(root / "a.txt", b"a\n")
    write_file(root / "d" / "b.txt", b"b\n")
    write_file(root / "d" / "e" / "c.txt", b"c\n")
    os.symlink("a.txt", root / "link")
    os.mkfifo(root / "fifo")
    return root


# --- scans --------------------------------------------------------------------------


def test_a_scan_records_every_entry(tree: Path) -> None:
    found = scan(tree)
    assert set(found) == {
        ROOT,
        b"/a.txt",
        b"/d",
        b"/d/b.txt",
        b"/d/e",
        b"/d/e/c.txt",
        b"/link",
        b"/fifo",
    }
    assert [found[p].type for p in (ROOT, b"/a.txt", b"/link", b"/fifo")] == [
        DIR,
        FILE,
        SYMLINK,
        FIFO,
    ]
    st = os.lstat(tree / "a.txt")
    a = found[b"/a.txt"]
    assert (a.ino, a.size, a.mtime_ns, a.mode, a.uid, a.nlink) == (
        st.st_ino,
        2,
        st.st_mtime_ns,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        1,
    )
    assert found[b"/link"].target == b"a.txt"
    assert found[b"/d"].size == 0  # only files have a size


def test_a_scan_of_a_file_is_refused(tree: Path) -> None:
    with pytest.raises(NotADirectoryError):
        scan_tree(str(tree / "a.txt"))


def test_names_are_bytes(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / "t")
    os.mkdir(root)
    for name in (b"\xff\xfe", b"new\nline", "ünï ✓".encode(), b'say "hi"'):
        with open(os.path.join(root, name), "wb") as f:
            f.write(b"x")
    found = scan(Path(os.fsdecode(root)))
    assert {b"/\xff\xfe", b"/new\nline", "/ünï ✓".encode(), b'/say "hi"'} < set(found)


@needs_root
def test_devices_record_their_numbers(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.mknod(root / "null", 0o20600, os.makedev(1, 3))

    def change() -> None:
        os.unlink(root / "null")
        os.mknod(root / "null", 0o20600, os.makedev(1, 5))

    changes, old, _ = changes_after(root, change)
    assert old[b"/null"].type == CHARDEV and old[b"/null"].rdev == os.makedev(1, 3)
    assert changes.rewritten == [b"/null"]


# --- changes ------------------------------------------------------------------------


def test_no_change(tree: Path) -> None:
    changes, _, _ = changes_after(tree, lambda: None)
    assert not changes and changes.count == 0


def test_created_parents_first(tree: Path) -> None:
    def change() -> None:
        write_file(tree / "n" / "m" / "deep.txt", b"deep\n")
        write_file(tree / "n" / "top.txt", b"top\n")
        os.mkdir(tree / "d" / "empty")

    changes, _, _ = changes_after(tree, change)
    created = changes.created
    assert set(created) == {b"/n", b"/n/m", b"/n/m/deep.txt", b"/n/top.txt", b"/d/empty"}
    assert [depth(p) for p in created] == sorted(depth(p) for p in created)
    assert set(changes.metadata) == {ROOT, b"/d"}  # their mtimes moved
    assert not (changes.removed or changes.rewritten or changes.renamed)


def test_removed_deepest_first(tree: Path) -> None:
    changes, _, _ = changes_after(tree, lambda: shutil.rmtree(tree / "d"))
    assert changes.removed == [b"/d/e/c.txt", b"/d/e", b"/d/b.txt", b"/d"]
    assert changes.created == []


def test_rewritten_when_size_or_mtime_changes(tree: Path) -> None:
    def change() -> None:
        (tree / "a.txt").write_bytes(b"longer\n")
        os.utime(tree / "d" / "b.txt", ns=(1, 1_000_000_001))  # same size, other mtime

    changes, _, _ = changes_after(tree, change)
    assert sorted(changes.rewritten) == [b"/a.txt", b"/d/b.txt"]
    assert not (changes.removed or changes.created or changes.renamed)


def test_a_file_replaced_by_another_inode_is_rewritten(tree: Path) -> None:
    def change() -> None:
        st = os.stat(tree / "a.txt")
        write_file(tree / "a.new", b"a\n")
        os.utime(tree / "a.new", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tree / "a.new", tree / "a.txt")

    changes, _, _ = changes_after(tree, change)
    assert changes.rewritten == [b"/a.txt"]


def test_renames_keep_the_inode(tree: Path) -> None:
    def change() -> None:
        os.rename(tree / "a.txt", tree / "A.txt")  # same folder
        os.rename(tree / "d" / "e" / "c.txt", tree / "c.txt")  # across folders
        os.rename(tree / "d" / "b.txt", tree / "d" / "B.txt")
        os.chmod(tree / "d" / "B.txt", 0o600)  # a rename with a new mode

    changes, _, _ = changes_after(tree, change)
    assert sorted(changes.renamed) == [
        (b"/a.txt", b"/A.txt"),
        (b"/d/b.txt", b"/d/B.txt"),
        (b"/d/e/c.txt", b"/c.txt"),
    ]
    assert not (changes.created or changes.removed or changes.rewritten)
    assert b"/d/B.txt" in changes.metadata  # and the others' ctimes moved: metadata too


def test_a_renamed_folder_is_removed_and_created_its_files_renamed(tree: Path) -> None:
    changes, _, _ = changes_after(tree, lambda: os.rename(tree / "d", tree / "D"))
    assert changes.removed == [b"/d/e", b"/d"]
    assert changes.created == [b"/D", b"/D/e"]
    assert sorted(changes.renamed) == [(b"/d/b.txt", b"/D/b.txt"), (b"/d/e/c.txt", b"/D/e/c.txt")]


@needs_root
def test_metadata_only(tree: Path) -> None:
    def change() -> None:
        os.chmod(tree / "a.txt", 0o600)
        os.chown(tree / "d" / "b.txt", 1234, 1234)
        os.utime(tree / "d", ns=(5, 1_234_567_890_123_456_789))
        os.lchown(tree / "link", 1234, 5)

    changes, _, new = changes_after(tree, change)
    assert set(changes.metadata) == {b"/a.txt", b"/d", b"/d/b.txt", b"/link"}
    assert not (changes.rewritten or changes.created or changes.removed or changes.renamed)
    assert (new[b"/link"].uid, new[b"/link"].gid) == (1234, 5)
    assert new[b"/d"].mtime_ns == 1_234_567_890_123_456_789


def test_a_file_becomes_a_folder_and_a_folder_a_file(tree: Path) -> None:
    def change() -> None:
        os.unlink(tree / "a.txt")
        write_file(tree / "a.txt" / "inside", b"i\n")
        shutil.rmtree(tree / "d")
        write_file(tree / "d", b"now a file\n")

    changes, _, new = changes_after(tree, change)
    removed = [b"/d/e/c.txt", b"/d/e", b"/d/b.txt", b"/d", b"/a.txt"]
    assert changes.removed == removed  # deepest first
    assert changes.created == [b"/a.txt", b"/d", b"/a.txt/inside"]  # parents first
    assert (new[b"/a.txt"].type, new[b"/d"].type) == (DIR, FILE)
    assert not (changes.rewritten or changes.renamed)


def test_a_file_renamed_onto_a_name_a_folder_held_is_created(tree: Path) -> None:
    def change() -> None:
        shutil.rmtree(tree / "d")
        os.rename(tree / "a.txt", tree / "d")

    changes, _, _ = changes_after(tree, change)
    assert b"/d" in changes.created and b"/a.txt" in changes.removed
    assert changes.renamed == []


def test_a_retargeted_symlink_is_rewritten(tree: Path) -> None:
    def change() -> None:
        os.unlink(tree / "link")
        os.symlink("d/b.txt", tree / "link")

    changes, _, new = changes_after(tree, change)
    assert changes.rewritten == [b"/link"]
    assert new[b"/link"].target == b"d/b.txt"


def test_a_symlink_that_becomes_a_file(tree: Path) -> None:
    def change() -> None:
        os.unlink(tree / "link")
        write_file(tree / "link", b"a file now\n")

    changes, _, _ = changes_after(tree, change)
    assert changes.removed == [b"/link"] and changes.created == [b"/link"]


def test_hard_links_are_never_renames(tree: Path) -> None:
    os.link(tree / "a.txt", tree / "d" / "a-again")
    # A second name: the new name is created, the old one's link count (ctime) moved.
    changes, _, new = changes_after(tree, lambda: os.link(tree / "a.txt", tree / "third"))
    assert changes.created == [b"/third"] and changes.renamed == []
    assert new[b"/third"].nlink == 3
    # Moving one name of a linked file: removed and created, not renamed.
    changes, _, _ = changes_after(tree, lambda: os.rename(tree / "third", tree / "d" / "moved"))
    assert changes.renamed == []
    assert changes.removed == [b"/third"] and changes.created == [b"/d/moved"]

    # Both names move together: still no rename (each has two links).
    def both() -> None:
        os.rename(tree / "a.txt", tree / "a2")
        os.rename(tree / "d" / "a-again", tree / "a3")

    changes, _, _ = changes_after(tree, both)
    assert changes.renamed == []
    assert {b"/a2", b"/a3"} <= set(changes.created)


def test_a_file_losing_its_second_name(tree: Path) -> None:
    os.link(tree / "a.txt", tree / "b")
    changes, _, new = changes_after(tree, lambda: os.unlink(tree / "b"))
    assert changes.removed == [b"/b"]
    assert new[b"/a.txt"].nlink == 1 and b"/a.txt" in changes.metadata


# --- unreadable folders ---------------------------------------------------------------


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="strongroom-nobody-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(path, ignore_errors=True)


def scan_as_nobody(root: Path, previous: Tree | None) -> Scan:
    """scan_tree in a child process that became `nobody` (root reads everything)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            result = scan_tree(str(root), previous)
            said = "\0".join(result.warnings).encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(len(said).to_bytes(8, "big") + said + save_tree(result.tree))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    n = int.from_bytes(data[:8], "big")
    warned = data[8 : 8 + n].decode().split("\0") if n else []
    return Scan(load_tree(data[8 + n :]), warned)


@needs_root
def test_an_unreadable_folder_keeps_its_previous_records(world_dir: Path) -> None:
    root = world_dir / "t"
    write_file(root / "open" / "x.txt", b"x\n", 0o644)
    write_file(root / "closed" / "y.txt", b"y\n", 0o644)
    write_file(root / "closed" / "sub" / "z.txt", b"z\n", 0o644)
    for folder in (root, root / "open", root / "closed", root / "closed" / "sub"):
        os.chmod(folder, 0o755)
    first = scan_as_nobody(root, None)
    assert first.warnings == []
    assert b"/closed/sub/z.txt" in first.tree
    os.chmod(root / "closed", 0o000)
    write_file(root / "open" / "new.txt", b"new\n", 0o644)
    second = scan_as_nobody(root, first.tree)
    assert len(second.warnings) == 1 and "closed" in second.warnings[0]
    for path in (b"/closed/y.txt", b"/closed/sub", b"/closed/sub/z.txt"):
        assert second.tree[path] == first.tree[path]
    changes = diff_trees(first.tree, second.tree)
    assert changes.removed == []
    assert changes.created == [b"/open/new.txt"]
    assert set(changes.metadata) == {b"/open", b"/closed"}  # its mode changed
    # Without a previous scan there is nothing to keep: the folder is empty.
    alone = scan_as_nobody(root, None)
    assert b"/closed" in alone.tree and b"/closed/y.txt" not in alone.tree


# --- the state's codec ------------------------------------------------------------------


def test_save_and_load_round_trip(tree: Path) -> None:
    names = {b"/a.txt": (b"user.one", b"user.two"), b"/d": (b"trusted.x",)}
    found = with_xattrs(scan(tree), names)
    odd = Entry(FILE, 7, 2, 10, -5, 6, 7, 0o7777, 2**32 - 2, 0, 0, b"", ())
    found[b'/\xff\n"odd" name'] = odd
    found[b"/link2"] = replace(found[b"/link"], target=b"\xff/target with space")
    assert load_tree(save_tree(found)) == found
    assert load_tree(save_tree({})) == {}
    assert found[b"/a.txt"].xattrs == (b"user.one", b"user.two")


def test_with_xattrs_ignores_unknown_paths(tree: Path) -> None:
    found = scan(tree)
    assert with_xattrs(found, {b"/nope": (b"user.x",)}) == found


def test_depth() -> None:
    assert [depth(p) for p in (ROOT, b"/a", b"/a/b", b"/a/b/c")] == [0, 1, 2, 3]
