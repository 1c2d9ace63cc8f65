"""The VHD backup mode (issue #4) through the real CLI: `strongroom protect SRC --to DEST`.

Each cycle's chain is judged by tools that are not strongroom's (libvhdi,
e2fsck, debugfs, vhdiinfo): see chain_case.py for the checks. The cycles of the
tests about what a cycle writes (names, times, node types) run in process,
through the same service (`run_api`), to keep the suite fast.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.marks import ROOT
from tests.helpers.tree import random_bytes, write_file
from tests.protect.chain_case import ChainCase
from tests.protect.mirror import (
    KiB,
    MiB,
    flatten,
    fsck_clean,
    image_inodes,
    need,
    need_e2fsprogs,
    same_bytes,
    tree_differences,
    vhd_layout,
)

pytestmark = ROOT  # owners (chown to 1234) and reading every file


@pytest.fixture
def case(tmp_path: Path, cli: CliRunner) -> ChainCase:
    need_e2fsprogs()
    need("vhdiinfo")
    return ChainCase(cli, tmp_path)


def ns(seconds: int, nanos: int) -> int:
    return seconds * 10**9 + nanos


def age(root: Path) -> None:
    """Distinct times in the past on every entry (children before their folder), so
    a folder time the mirror moves by mistake cannot pass for the source's."""
    paths = [*sorted(root.rglob("*"), key=lambda p: -len(p.parts)), root]
    for i, path in enumerate(paths):
        when = ns(1_500_000_000 + 1000 * i, 1000 * i + 7)
        os.utime(path, ns=(when, when), follow_symlinks=False)


def first_tree(src: Path) -> None:
    write_file(src / "docs" / "readme.txt", b"read me\n")
    write_file(src / "docs" / "with space.txt", b"a name with a space\n")
    write_file(src / "docs" / 'say "hi".txt', b"double quotes in the name\n")
    write_file(src / "docs" / "ünïcødé ✓.txt", "nön-ASCII cöntent\n".encode())
    write_file(src / "big" / "random.bin", random_bytes(5 * MiB, 1))
    write_file(src / "empty", b"")
    with open(src / "sparse.img", "wb") as f:
        f.truncate(8 * MiB)
        f.seek(3 * MiB + 5)
        f.write(random_bytes(64 * KiB, 2))
    write_file(src / "tree" / "a" / "b" / "c.txt", b"c" * 5000)
    write_file(src / "tree" / "a" / "d.txt", b"d\n")
    write_file(src / "move" / "one.txt", b"moves to another folder\n")
    write_file(src / "move" / "two.txt", b"renamed in its folder\n")
    write_file(src / "olddir" / "x.txt", b"in a folder that is renamed\n")
    write_file(src / "olddir" / "sub" / "y.txt", b"deeper in it\n")
    os.symlink("olddir/x.txt", src / "olddir" / "sub" / "to-x")
    os.symlink("docs/readme.txt", src / "link")
    write_file(src / "hard" / "first", b"two names, one inode\n")
    os.link(src / "hard" / "first", src / "hard" / "second")
    os.mkfifo(src / "fifo", 0o640)
    write_file(src / "owned", b"owned by 1234\n", 0o600)
    os.chown(src / "owned", 1234, 5678)
    os.chmod(src / "docs" / "readme.txt", 0o4755)
    os.setxattr(src / "docs" / "readme.txt", "user.comment", b"a comment")
    os.setxattr(src / "docs", "user.folder", b"\x00\xff binary")
    age(src)


def test_five_cycles_give_a_chain_that_is_the_tree_at_every_cycle(case: ChainCase) -> None:
    src = case.src
    src.mkdir()
    first_tree(src)
    base = case.run()
    assert base["kind"] == "base" and base["cycle"] == 0
    case.check(base)

    # 1: new files (awkward names, empty, big, sparse), a small change in a big file.
    write_file(src / "new dir" / 'both "quoted" and spaced', b"new\n")
    write_file(src / "new dir" / "日本語.txt", random_bytes(10_000, 3))
    write_file(src / "new dir" / "empty too", b"")
    write_file(src / "five-mb.bin", random_bytes(5 * MiB, 4))
    with open(src / "holes.img", "wb") as f:
        f.truncate(6 * MiB)
        f.seek(5 * MiB)
        f.write(b"island")
    with open(src / "big" / "random.bin", "r+b") as changed:
        changed.seek(MiB + 17)
        changed.write(b"a small change")
    one = case.run()
    assert one["kind"] == "differencing" and one["cycle"] == 1
    assert one["changes"]["created"] == 6 and one["changes"]["rewritten"] == 1
    case.check(one)

    # 2: renames (same folder, across folders, a folder), links, xattrs.
    os.rename(src / "move" / "two.txt", src / "move" / "deux.txt")
    os.rename(src / "move" / "one.txt", src / "docs" / "one.txt")
    os.rename(src / "olddir", src / "newdir")
    os.unlink(src / "link")
    os.symlink("docs/with space.txt", src / "link")  # retargeted
    os.symlink("../five-mb.bin", src / "new dir" / "to five")
    os.setxattr(src / "docs", "user.folder", b"changed")
    os.setxattr(src / "docs" / "one.txt", "user.moved", b"with its new name")
    os.link(src / "docs" / "with space.txt", src / "new dir" / "hard to space")
    two = case.run()
    assert two["changes"]["renamed"] >= 2
    case.check(two)

    # 3: deletions (files, one name of a hard link pair, a non-empty tree) and
    # metadata only (modes, owners, nanosecond times).
    os.unlink(src / "docs" / "readme.txt")
    os.unlink(src / "hard" / "second")
    subprocess.run(["rm", "-rf", str(src / "tree")], check=True)
    os.chmod(src / "docs" / "with space.txt", 0o600)
    os.chown(src / "big" / "random.bin", 1234, 1234)
    os.chown(src / "newdir", 1234, 0)
    os.lchown(src / "link", 1234, 42)
    os.removexattr(src / "docs", "user.folder")
    os.utime(src / "empty", ns=(ns(1_700_000_000, 5), ns(1_650_000_000, 987_654_321)))
    os.utime(src / "move", ns=(ns(1_700_000_000, 5), ns(1_400_000_000, 999_999_999)))
    three = case.run()
    assert three["changes"]["removed"] >= 6 and three["changes"]["metadata"] >= 4
    case.check(three)

    # 4: types change (file -> folder, folder -> file), a hard linked file is rewritten.
    os.unlink(src / "empty")
    write_file(src / "empty" / "now a folder", b"inside\n")
    subprocess.run(["rm", "-rf", str(src / "move")], check=True)
    write_file(src / "move", b"now a file\n", 0o640)
    with open(src / "docs" / "with space.txt", "ab") as f:
        f.write(b"more, seen through both names\n")
    four = case.run()
    case.check(four)

    # 5: nothing changed: nothing ships.
    files = case.files()
    none = case.run()
    assert none["kind"] == "none" and none["cycle"] is None
    assert case.files() == files

    # 5 again: a mode and a folder's times: a metadata-only cycle is small.
    os.chmod(src / "five-mb.bin", 0o444)
    os.utime(src / "new dir", ns=(ns(1_700_000_000, 0), ns(1_690_000_000, 1)))
    five = case.run()
    assert five["cycle"] == 5 and five["changes"]["metadata"] == 2
    assert sum(five["changes"].values()) == 2
    assert five["bytes_changed"] <= 64 * KiB
    case.check(five)

    # The whole chain, by strongroom's own checker.
    check = case.cli("vhd", "check", str(case.files()[-1]), "--json")
    assert check.rc == 0, check.err
    doc = check.json()
    assert [Path(f["path"]).name for f in doc["files"]] == [p.name for p in case.files()[::-1]]


AWKWARD = [
    "back\\slash",
    "tab\tname",
    "#hash",
    "single'quote",
    "semi;colon",
    "$dollar",
    "*star",
    "trailing ",
    " leading",
    '"',
    '""',
    'a"b"c',
    "-dash",
    "x y  z",
    "L" * 255,
]


def test_awkward_names(case: ChainCase) -> None:
    """Names debugfs must be given quoted: created, renamed and removed."""
    src = case.src
    write_file(src / "a", b"a\n")
    case.check(case.run_api())
    os.mkdir(src / 'folder "q"')
    for i, name in enumerate(AWKWARD):
        write_file(src / 'folder "q"' / name, b"%d\n" % i)
    os.mkdir(os.fsencode(src) + b"/\xff\xfe not utf-8")
    os.symlink('folder "q"/"', src / 'link "to" a quote')
    case.check(case.run_api())
    for name in AWKWARD[:8]:
        os.rename(src / 'folder "q"' / name, src / (name[:200] + " moved"))
    case.check(case.run_api())
    for name in AWKWARD[8:]:
        os.unlink(src / 'folder "q"' / name)
    os.rmdir(os.fsencode(src) + b"/\xff\xfe not utf-8")
    case.check(case.run_api())


def test_times_keep_their_nanoseconds(case: ChainCase) -> None:
    """Files the cycles change get their mtimes to the nanosecond."""
    src = case.src
    write_file(src / "a", b"a\n")
    write_file(src / "d" / "b", b"b\n")
    case.check(case.run_api())
    os.utime(src / "a", ns=(ns(1_700_000_000, 1), ns(1_600_000_000, 123_456_789)))
    write_file(src / "c", b"c\n")
    os.utime(src / "c", ns=(ns(1_700_000_000, 1), ns(1_234_567_890, 999_999_999)))
    os.utime(src / "d", ns=(ns(1_700_000_000, 1), ns(2_500_000_000, 7)))  # past 2038
    one = case.run_api()
    case.check(one)
    inodes = image_inodes(case.flat(1), case.work("inodes"))
    for path in (b"/a", b"/c", b"/d"):
        assert inodes[path].mtime_ns == os.lstat(os.fsencode(src) + path).st_mtime_ns, path


# Regression, fixed (src/strongroom/protect/vhd_mode.py, first_cycle): the first cycle builds the
# file system with `mke2fs -d`, which (e2fsprogs 1.47.0) copies times in whole
# seconds only; only the root's metadata is set again with debugfs afterwards. Every
# entry that no later cycle touches keeps a truncated mtime in the chain for ever.
def test_first_cycle_keeps_nanosecond_mtimes(case: ChainCase) -> None:
    src = case.src
    write_file(src / "a", b"a\n")
    write_file(src / "d" / "b", b"b\n")
    os.utime(src / "a", ns=(ns(1_700_000_000, 1), ns(1_600_000_000, 123_456_789)))
    os.utime(src / "d", ns=(ns(1_700_000_000, 1), ns(1_600_000_000, 987_654_321)))
    case.check(case.run_api())
    assert tree_differences(src, case.flat(0), case.work("exact"), exact_mtime=True) == []


# Regression, fixed (src/strongroom/protect/destinations.py, VhdChain.ship): the folder copy of
# the cycle's VHD is written byte for byte through the backend's temporary file, so
# the zero padding of every allocated 2 MiB block takes disk space at the
# destination (outgoing.vhd, written by write_vhd, is sparse; its copy is not).
def test_shipped_vhd_is_sparse_in_a_folder(case: ChainCase) -> None:
    src = case.src
    write_file(src / "a", b"a\n")
    case.run_api()
    os.chmod(src / "a", 0o600)
    one = case.run_api()
    shipped = case.files()[-1]
    assert shipped.stat().st_blocks * 512 <= one["bytes_changed"] + MiB


# Regression, fixed (src/strongroom/protect/translate.py, build_script step 5, the `mknod` lines):
# debugfs's mknod links its whole argument as one name in the current directory
# (unlike write, mkdir and symlink it resolves no path), so `mknod "/d/pipe" p`
# makes an entry literally named "/d/pipe" in the root, and the `sif "/d/pipe"`
# lines after it fail: every cycle fails for as long as the source holds a FIFO
# or device node made after the first cycle.
def test_fifos_and_devices_made_after_the_first_cycle(case: ChainCase) -> None:
    src = case.src
    write_file(src / "d" / "a", b"a\n")
    case.check(case.run_api())
    os.mkfifo(src / "pipe", 0o600)
    os.mkfifo(src / "d" / "pipe in a folder", 0o644)
    os.mknod(src / "d" / "null", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    case.check(case.run_api())


def test_a_smaller_vhd_block_size_is_kept_for_the_whole_chain(case: ChainCase) -> None:
    src = case.src
    write_file(src / "a.txt", b"a\n")
    write_file(src / "b.bin", random_bytes(300 * KiB, 6))
    base = case.run("--vhd-block-size", "64K")
    case.check(base)
    assert vhd_layout(case.files()[0]).block_size == 64 * KiB
    for step, size in enumerate(["4M", "64K"], start=1):
        write_file(src / f"n{step}", random_bytes(70 * KiB, step))
        summary = case.run("--vhd-block-size", size)  # the chain's first block size wins
        case.check(summary)
        assert vhd_layout(case.files()[-1]).block_size == 64 * KiB
        assert summary["vhd_bytes"] < MiB


def test_every_runs_cycles_until_told_to_stop(case: ChainCase) -> None:
    write_file(case.src / "a.txt", b"a\n")
    result = case.protect("--every", "0.1s", "--cycles", "3")
    assert result.rc == 0, result.err
    summaries = [d for d in result.lines() if d.get("message_type") == "summary"]
    assert [s["kind"] for s in summaries] == ["base", "none", "none"]
    case.check(summaries[0])


def test_no_change_ships_nothing(case: ChainCase) -> None:
    src = case.src
    write_file(src / "a", b"a\n")
    case.run_api()
    before = sorted(p.name for p in case.dest.iterdir())
    meta = case.disk.read_bytes()
    for _ in range(2):
        none = case.run()
        assert none["kind"] == "none" and none["cycle"] is None and none["vhd_bytes"] == 0
    assert sorted(p.name for p in case.dest.iterdir()) == before
    assert case.disk.read_bytes() == meta


def test_repository_destination_exports_as_the_same_chain(
    tmp_path: Path, cli: CliRunner, repo_path: Path
) -> None:
    """--to-repository stores each cycle as a block point; `export --chain` gives
    back a VHD chain whose disk is the metadata disk."""
    need_e2fsprogs()
    assert cli("init").rc == 0
    src = tmp_path / "data"
    write_file(src / "a.txt", b"first\n")
    write_file(src / "sub" / "b.bin", random_bytes(300 * KiB, 5))
    state = tmp_path / "state"
    protect = ["protect", str(src), "--to-repository", "--state", str(state), "--json"]
    for cycle in range(3):
        if cycle:
            write_file(src / f"new-{cycle}", random_bytes(1000 * cycle, cycle))
            os.chmod(src / "a.txt", 0o600 + cycle)
        result = cli(*protect, "--size", "32M")
        assert result.rc == 0, result.err
        summary = result.summary()
        assert summary["cycle"] == cycle
        assert summary["kind"] == ("base" if cycle == 0 else "differencing")
    assert cli(*protect).summary()["kind"] == "none"
    out = tmp_path / "exported"
    exported = cli("export", "--chain", "protect:data", str(out), "--json")
    assert exported.rc == 0, exported.err
    files = [Path(f["path"]) for f in exported.summary()["files"]]
    assert [f["type"] for f in exported.summary()["files"]] == [
        "dynamic",
        "differencing",
        "differencing",
    ]
    flat = tmp_path / "flat.img"
    assert flatten(files, flat) == 32 * MiB
    assert same_bytes(flat, state / "meta.vhd", 32 * MiB)
    fsck_clean(flat)
    assert tree_differences(src, flat, tmp_path / "compare") == []
