"""A hostile repository cannot make restore write outside its target (issue #10).

Each test crafts a point through the repository's own write API (trees packed
by hand: unsorted, duplicate and impossible names, sizes that do not add up),
restores it, and compares a snapshot of everything around the target before
and after. Some tests also run restore with the decoder's name checks switched
off, to show that restore's own path handling holds on its own.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.errors import IntegrityError
from strongroom.model import tree as tree_model
from strongroom.model.tree import Node, TreePath, _decode_doc
from strongroom.pipeline import restore as restore_module
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.browse import diff_trees, list_entries
from strongroom.services.restore import restore_files
from tests.helpers.hostile import (
    dir_wire,
    file_wire,
    put_tree,
    save_files_point,
    snapshot,
    wire,
)


class World:
    """tmp/world/{target, outside/{victim, hl-victim, sub/}, bystander}: the target's
    parent, and an `outside` folder that hostile symlinks point to."""

    def __init__(self, base: Path) -> None:
        self.root = base / "world"
        self.target = self.root / "target"
        self.outside = self.root / "outside"
        self.victim = self.outside / "victim"
        self.target.mkdir(parents=True)
        (self.outside / "sub").mkdir(parents=True)
        self.victim.write_bytes(b"victim content\n")
        os.chmod(self.victim, 0o644)
        (self.outside / "hl-victim").write_bytes(b"hard-linked into the target\n")
        (self.root / "bystander").write_bytes(b"next to the target\n")
        os.symlink("victim", self.outside / "vlink")
        os.utime(self.root, ns=(1, 1))  # a changed mtime shows a created/removed entry
        self.before: dict[str, tuple[Any, ...]] = {}

    def freeze(self) -> None:
        self.before = snapshot(self.root.parent, self.target, loose=("hl-",))

    def assert_untouched(self) -> None:
        after = snapshot(self.root.parent, self.target, loose=("hl-",))
        changed = {
            k for k in self.before.keys() | after.keys() if self.before.get(k) != after.get(k)
        }
        assert not changed, f"restore changed things outside its target: {sorted(changed)}"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore with trees decoded without the name rules (duplicates, unsorted):
    restore's own handling must hold without the decoder's help."""

    def decode(blob: bytes) -> list[Node]:
        return [Node.from_wire(w) for w in _decode_doc(blob)]

    monkeypatch.setattr(restore_module, "decode_tree", decode)


def _restore(repo: Repository, root: bytes, target: Path) -> restore_module.RestoreSummary:
    return restore_files(repo, save_files_point(repo, root), str(target))


# --- names the decoder refuses ------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"..", b".", b"", b"../x", b"/etc/cron.d/x", b"a/b", b"x\0y", b"\0"],
    ids=["dotdot", "dot", "empty", "dotdot-slash", "absolute", "slash", "nul", "only-nul"],
)
@pytest.mark.parametrize("kind", ["f", "d", "l"])
def test_a_name_that_is_not_one_component_is_refused(
    world: World, memory_repo: Repository, name: bytes, kind: str
) -> None:
    if kind == "f":
        node = file_wire(memory_repo, name, b"written by the attacker\n", m=0o4755)
    elif kind == "d":
        node = dir_wire(memory_repo, name, [file_wire(memory_repo, b"x", b"attack\n")], m=0o777)
    else:
        node = wire(name, "l", lt=str(world.victim).encode())
    root = put_tree(memory_repo, [node])
    world.freeze()
    with pytest.raises(IntegrityError, match="tree is damaged"):
        _restore(memory_repo, root, world.target)
    world.assert_untouched()
    assert os.listdir(world.target) == []


def test_a_dotdot_directory_deeper_down_loses_only_its_directory(
    world: World, memory_repo: Repository
) -> None:
    """The old restore created `x` in the target's parent and chmod-ed the parent 0o777."""
    evil = dir_wire(memory_repo, b"..", [file_wire(memory_repo, b"x", b"attack\n")], m=0o777)
    sub = dir_wire(memory_repo, b"sub", [evil])
    good = file_wire(memory_repo, b"good", b"kept\n")
    world.freeze()
    summary = _restore(memory_repo, put_tree(memory_repo, [good, sub]), world.target)
    world.assert_untouched()
    assert summary.damaged == ["/sub"]
    assert (world.target / "good").read_bytes() == b"kept\n"
    assert os.listdir(world.target / "sub") == []


@pytest.mark.parametrize("order", ["dup-sorted", "unsorted"])
def test_duplicate_and_unsorted_names_are_damage(
    world: World, memory_repo: Repository, order: str
) -> None:
    link = wire(b"a", "l", lt=str(world.victim).encode())
    names = [b"a", b"a"] if order == "dup-sorted" else [b"b", b"a"]
    nodes = [link if n == b"a" else file_wire(memory_repo, n, b"b") for n in names]
    if order == "dup-sorted":
        nodes[1] = file_wire(memory_repo, b"a", b"attack\n")
    world.freeze()
    with pytest.raises(IntegrityError, match=r"(duplicate|unsorted) name"):
        _restore(memory_repo, put_tree(memory_repo, nodes), world.target)
    world.assert_untouched()


# --- restore's own path handling (decoder rules off) ---------------------------


def test_hard_link_partner_of_a_symlink_does_not_write_through_it(
    world: World, memory_repo: Repository, lenient: None
) -> None:
    """The issue's attack: `a` a symlink to the victim, then `a` and `b` a
    hard-linked pair, `b` setuid. The old restore recorded `a` in its link table
    before creating it (which failed with ELOOP), then os.link followed the
    symlink: the victim got the attacker's content and mode 04755."""
    link = wire(b"a", "l", lt=str(world.victim).encode())
    payload = b"#!/bin/sh\necho owned\n"
    a = file_wire(memory_repo, b"a", payload, ino=77, dev=1, nl=2, m=0o4755)
    b = file_wire(memory_repo, b"b", payload, ino=77, dev=1, nl=2, m=0o4755)
    world.freeze()
    summary = _restore(memory_repo, put_tree(memory_repo, [link, a, b]), world.target)
    world.assert_untouched()
    assert (world.target / "a").read_bytes() == payload  # the later `a` replaced the symlink
    assert not (world.target / "a").is_symlink()
    assert os.path.samefile(world.target / "a", world.target / "b")
    assert summary.damaged == []


def test_symlink_then_directory_of_the_same_name_stays_inside(
    world: World, memory_repo: Repository, lenient: None
) -> None:
    """`evl -> outside` followed by entries under `evl`: they land in a real directory."""
    link = wire(b"evl", "l", lt=str(world.outside).encode())
    evl = dir_wire(memory_repo, b"evl", [file_wire(memory_repo, b"victim", b"attack\n")])
    world.freeze()
    _restore(memory_repo, put_tree(memory_repo, [link, evl]), world.target)
    world.assert_untouched()
    assert (world.target / "evl").is_dir() and not (world.target / "evl").is_symlink()
    assert (world.target / "evl" / "victim").read_bytes() == b"attack\n"


def test_directory_then_symlink_of_the_same_name_is_a_warning(
    world: World, memory_repo: Repository, lenient: None
) -> None:
    evl = dir_wire(memory_repo, b"evl", [file_wire(memory_repo, b"x", b"x\n")])
    link = wire(b"evl", "l", lt=str(world.outside).encode())
    late = file_wire(memory_repo, b"victim", b"attack\n")
    world.freeze()
    summary = _restore(memory_repo, put_tree(memory_repo, [evl, link, late]), world.target)
    world.assert_untouched()
    assert any("a directory is in the way" in w for w in summary.warnings)
    assert (world.target / "evl" / "x").read_bytes() == b"x\n"


@pytest.mark.parametrize("kind", ["abs", "rel", "file", "dir-link"])
def test_entries_already_in_the_target_are_replaced_not_followed(
    world: World, memory_repo: Repository, kind: str
) -> None:
    """A target that is not empty: symlinks to the outside and a hard link of an
    outside file sit where the point has files, FIFOs, symlinks and directories."""
    pre = world.target
    for name in (b"f1", b"f2", b"fifo", b"sym", b"many"):
        path = os.path.join(pre, name.decode())
        if kind == "abs":
            os.symlink(world.victim, path)
        elif kind == "rel":
            os.symlink("../outside/victim", path)
        elif kind == "dir-link":
            os.symlink(world.outside, path)
        else:
            os.link(world.outside / "hl-victim", path)
    big = os.urandom(3 << 20)  # more than one chunk: written by the multi-chunk path
    chunks = [
        memory_repo.put_chunk(BlobType.DATA, big[i : i + (1 << 20)])
        for i in range(0, len(big), 1 << 20)
    ]
    nodes = [
        file_wire(memory_repo, b"f1", b"one\n", m=0o4755, u=1234, g=1234),
        file_wire(memory_repo, b"f2", b"", m=0o600),
        wire(b"fifo", "p", m=0o666),
        wire(b"many", "f", sz=len(big), c=b"".join(chunks), cs=[1 << 20] * 3, m=0o6755),
        wire(b"sym", "l", lt=b"/nowhere", m=0o777),
    ]
    world.freeze()
    summary = _restore(memory_repo, put_tree(memory_repo, nodes), world.target)
    world.assert_untouched()
    assert summary.warnings == [] and summary.damaged == []
    assert (pre / "f1").read_bytes() == b"one\n"
    assert stat.S_IMODE(os.lstat(pre / "f1").st_mode) == 0o4755  # setuid after chown survives
    assert (pre / "many").read_bytes() == big
    assert stat.S_ISFIFO(os.lstat(pre / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(pre / "fifo").st_mode) == 0o666
    assert os.readlink(pre / "sym") == "/nowhere"


def test_existing_directory_link_in_the_path_is_replaced(
    world: World, memory_repo: Repository
) -> None:
    """A symlink to the outside where the point has a directory: the directory
    is created in its place, and everything below lands inside the target."""
    os.symlink(world.outside, world.target / "sub")
    sub = dir_wire(memory_repo, b"sub", [file_wire(memory_repo, b"victim", b"attack\n")], m=0o777)
    world.freeze()
    _restore(memory_repo, put_tree(memory_repo, [sub]), world.target)
    world.assert_untouched()
    assert not (world.target / "sub").is_symlink()
    assert (world.target / "sub" / "victim").read_bytes() == b"attack\n"


def test_hard_link_partners_of_other_types_link_nothing_outside(
    world: World, memory_repo: Repository, lenient: None
) -> None:
    """Inode numbers shared with a symlink, a directory and a FIFO across directories."""
    shared = {"ino": 5, "dev": 9, "nl": 3}
    nodes = [
        wire(b"a-link", "l", lt=str(world.victim).encode(), **shared),
        dir_wire(
            memory_repo, b"b-dir", [file_wire(memory_repo, b"c", b"inner\n", **shared)], **shared
        ),
        wire(b"c-fifo", "p", **shared),
        file_wire(memory_repo, b"d-file", b"outer\n", **shared),
    ]
    world.freeze()
    _restore(memory_repo, put_tree(memory_repo, nodes), world.target)
    world.assert_untouched()
    assert os.path.samefile(world.target / "b-dir" / "c", world.target / "d-file")
    assert (world.target / "d-file").read_bytes() == b"inner\n"
    assert os.readlink(world.target / "a-link") == str(world.victim)


# --- sizes -------------------------------------------------------------------


def test_a_chunk_longer_than_the_tree_says_is_damage_not_written(
    world: World, memory_repo: Repository
) -> None:
    """The old restore wrote a single chunk whole: 1 MiB for a 100-byte file."""
    data = os.urandom(1 << 20)  # incompressible: stored raw, not cut short by decompression
    cid = memory_repo.put_chunk(BlobType.DATA, data)
    node = wire(b"small", "f", sz=100, c=cid, cs=[100])
    summary = _restore(memory_repo, put_tree(memory_repo, [node]), world.target)
    assert summary.damaged == ["/small"]
    assert os.path.getsize(world.target / "small") == 100
    assert summary.bytes_written == 0


def test_chunk_sizes_that_do_not_add_up_are_damage(world: World, memory_repo: Repository) -> None:
    node = file_wire(memory_repo, b"f", b"0123456789", sz=1 << 30)
    bad = dir_wire(memory_repo, b"bad", [node])
    summary = _restore(memory_repo, put_tree(memory_repo, [bad]), world.target)
    assert summary.damaged == ["/bad"]
    assert any("do not add up" in w for w in summary.warnings)
    assert os.listdir(world.target / "bad") == []


# --- nesting -----------------------------------------------------------------


class _SelfContaining:
    """A repository whose tree `loop` holds a directory whose subtree is `loop`
    again: impossible to store with content-addressed ids, so forged on load."""

    LOOP = b"\x01" * 32

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        repo.flush()
        sub = wire(b"again", "d", st=self.LOOP, m=0o755)
        self.blob = tree_model.encode_wires([sub, wire(b"file", "f")])

    def load_chunk(
        self, cid: bytes, blob_type: BlobType = BlobType.DATA, raw: int | None = None
    ) -> bytes:
        if cid == self.LOOP:
            return self.blob
        return self.repo.load_chunk(cid, blob_type, raw)


def test_a_tree_containing_itself_is_damage_in_restore(
    world: World, memory_repo: Repository
) -> None:
    fake = _SelfContaining(memory_repo)
    job = restore_module.FileRestore(fake, fake.LOOP, str(world.target))  # type: ignore[arg-type]
    summary = job.run()
    assert summary.damaged == ["/again"]
    assert any("contains itself" in w for w in summary.warnings)
    assert (world.target / "again").is_dir() and (world.target / "file").exists()
    assert os.listdir(world.target / "again") == []


def test_a_tree_containing_itself_ends_ls_and_diff_with_one_error(memory_repo: Repository) -> None:
    fake = _SelfContaining(memory_repo)
    with pytest.raises(IntegrityError, match="contains itself"):
        list(list_entries(fake, fake.LOOP))  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match="contains itself"):
        list(diff_trees(fake, fake.LOOP, None))  # type: ignore[arg-type]


def _chain(repo: Repository, depth: int) -> bytes:
    nodes = [file_wire(repo, b"leaf", b"bottom\n")]
    for _ in range(depth - 1):
        nodes = [dir_wire(repo, b"d", nodes)]
    root = put_tree(repo, nodes)
    repo.flush()
    return root


def test_nesting_beyond_the_limit_is_damage(
    world: World, memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree_model, "MAX_TREE_DEPTH", 8)
    root = _chain(memory_repo, 12)
    summary = _restore(memory_repo, root, world.target)
    assert len(summary.damaged) == 1 and "deeper than 8 levels" in summary.warnings[0]
    with pytest.raises(IntegrityError, match="deeper than 8"):
        list(list_entries(memory_repo, root))


def test_deep_trees_walk_without_recursion(world: World, memory_repo: Repository) -> None:
    """3000 levels (more than Python's default recursion limit): restore, ls and
    diff walk them with explicit stacks."""
    depth = 3000
    root = _chain(memory_repo, depth)
    paths = [p for p, _ in list_entries(memory_repo, root)]
    assert len(paths) == depth and paths[-1].endswith(b"/leaf")
    assert len(list(diff_trees(memory_repo, None, root))) == depth
    other = _chain(memory_repo, depth - 1)
    assert len(list(diff_trees(memory_repo, other, root))) >= 2


def test_tree_path_refuses_a_loop_and_depth() -> None:
    path = TreePath()
    path.enter(b"a" * 32)
    with pytest.raises(IntegrityError, match="contains itself"):
        path.enter(b"a" * 32)
    path.enter(b"b" * 32)
    path.leave()
    path.enter(b"b" * 32)  # left again: a sibling may repeat it
    assert len(path) == 2


@pytest.fixture(autouse=True)
def _no_fd_leaks() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    leaked = set(os.listdir("/proc/self/fd")) - before
    assert not leaked or all(not os.path.exists(f"/proc/self/fd/{fd}") for fd in leaked)
