"""Round trip fidelity: back up a tree with every kind of entry and metadata with
the CLI, restore it, and prove the copy equal with rsync and with a Python walk."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.compare import atime_is_stable, rsync_differences, walk_differences
from tests.helpers.marks import ROOT
from tests.helpers.tree import (
    ISLAND_SIZE,
    LONG_DEPTH,
    SPARSE_ISLANDS,
    SPARSE_SIZE,
    FullTree,
    make_full_tree,
)

pytestmark = ROOT  # owners, devices, trusted.* xattrs

MAX_CHUNK = 4 * 1024 * 1024


def restored_root(target: Path, source: Path) -> Path:
    """A point's absolute source path is recreated below the restore target."""
    return target / str(source).lstrip("/")


def assert_identical(tree: FullTree, restored: Path) -> None:
    # The Python walk first: it compares atimes, which any later read might disturb.
    assert walk_differences(tree.root, restored, check_atime=atime_is_stable(restored)) == []
    # rsync does not cope with paths over PATH_MAX: the walk above covered that part.
    assert rsync_differences(tree.root, restored, excludes=(f"/{tree.long_dir.decode()}",)) == []


def assert_sparse(tree: FullTree, restored: Path) -> None:
    st = os.stat(restored / tree.sparse.relative_to(tree.root))
    assert st.st_size == SPARSE_SIZE
    # Only chunks holding an island are written; an island touches at most two
    # chunks of at most 4 MiB each. Everything else must stay a hole.
    bound = len(SPARSE_ISLANDS) * 2 * (MAX_CHUNK + ISLAND_SIZE)
    assert st.st_blocks * 512 <= bound < SPARSE_SIZE
    assert (restored / tree.sparse.relative_to(tree.root)).read_bytes() == tree.sparse.read_bytes()


def assert_hard_links(tree: FullTree, restored: Path) -> None:
    for group in tree.hardlink_groups:
        inodes = {os.lstat(restored / rel).st_ino for rel in group}
        assert len(inodes) == 1, group
        assert os.lstat(restored / group[0]).st_nlink == len(group)


def assert_long_path(tree: FullTree, restored: Path) -> None:
    """Reach the bottom of the > 4096-byte path with directory descriptors."""
    assert len(tree.long_leaf) > 4096
    parts = tree.long_leaf.split(b"/")
    assert len(parts) == LONG_DEPTH + 2
    fd = os.open(restored, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        leaf = os.open(parts[-1], os.O_RDONLY, dir_fd=fd)
        try:
            assert os.read(leaf, 100).startswith(b"at the bottom of a very long path")
            assert os.getxattr(leaf, "user.where") == b"deep down"
        finally:
            os.close(leaf)
        assert os.readlink("leaf-link", dir_fd=fd) == "leaf.txt"
    finally:
        os.close(fd)


def test_hard_links_below_a_path_longer_than_path_max(tmp_path: Path, cli: CliRunner) -> None:
    """Regression: later names were linked by a relative path > PATH_MAX (ENAMETOOLONG)."""
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(LONG_DEPTH):
            name = b"%03d" % level + b"L" * 197
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        wfd = os.open("first", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, b"one inode, two names\n")
        os.close(wfd)
        os.link("first", "second", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    assert cli("init").rc == 0
    assert cli("backup", str(src)).rc == 0
    target = tmp_path / "restore"
    result = cli("restore", "latest", "--target", str(target))
    assert result.rc == 0, result.err[-300:]
    assert walk_differences(src, restored_root(target, src), check_atime=False) == []


def test_full_round_trip_is_exact(tmp_path: Path, cli: CliRunner) -> None:
    tree = make_full_tree(tmp_path / "src")
    assert cli("init").rc == 0

    backup = cli("backup", str(tree.root), "--json")
    assert backup.rc == 0, backup.err
    summary = backup.summary()
    assert summary["warnings"] == 0 and summary["unreadable"] == 0, backup.out
    assert summary["files_new"] == summary["total_files"] > 30

    target = tmp_path / "restore"
    restore = cli("restore", "latest", "--target", str(target), "--json")
    assert restore.rc == 0, restore.err
    assert restore.summary()["damaged"] == [] and restore.summary()["warnings"] == []
    restored = restored_root(target, tree.root)

    assert_identical(tree, restored)
    assert_sparse(tree, restored)
    assert_hard_links(tree, restored)
    assert_long_path(tree, restored)
    assert (restored / tree.deep_leaf.relative_to(tree.root)).read_bytes() == b"depth 300\n"

    # An incremental backup of the unchanged tree reuses everything, and its point
    # restores just as exactly (chunk lists and xattrs come from the parent point).
    again = cli("backup", str(tree.root), "--json")
    assert again.rc == 0, again.err
    assert again.summary()["files_unmodified"] == again.summary()["total_files"]
    assert again.summary()["bytes_read"] == 0
    target2 = tmp_path / "restore2"
    assert cli("restore", again.summary()["point_id"][:12], "--target", str(target2)).rc == 0
    assert_identical(tree, restored_root(target2, tree.root))
