"""The VHD backup mode run by an unprivileged user (`nobody`, from root): folders
and files it cannot read."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import NOBODY, CliResult, run_cli
from tests.helpers.marks import ROOT
from tests.helpers.tree import write_file
from tests.protect.chain_case import ChainCase, warnings_of
from tests.protect.mirror import image_inodes, need, need_e2fsprogs

pytestmark = ROOT  # to become nobody

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's tmp_path is private to root)."""
    need_e2fsprogs()
    need("vhdiinfo")
    path = Path(tempfile.mkdtemp(prefix="strongroom-nobody-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(world: Path) -> Any:
    """A `cli` runner (ChainCase's) that runs strongroom as nobody."""
    home = world / "home"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "USER": "nobody",
        "LOGNAME": "nobody",
    }
    command = [sys.executable, "-m", "tests.protect.nobody"]

    def run(*args: str) -> CliResult:
        return run_cli(list(args), env, command=command, cwd=PROJECT)

    return run


def owned_by_nobody(*paths: Path) -> None:
    for path in paths:
        for dirpath, dirnames, filenames in os.walk(path):
            os.chown(dirpath, NOBODY, NOBODY)
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), NOBODY, NOBODY, follow_symlinks=False)


@pytest.fixture
def case(world_dir: Path) -> ChainCase:
    case = ChainCase(as_nobody(world_dir), world_dir, size="16M")
    write_file(case.src / "open" / "a.txt", b"a\n", 0o644)
    write_file(case.src / "closed" / "b.txt", b"b\n", 0o644)
    write_file(case.src / "closed" / "sub" / "c.txt", b"c\n", 0o644)
    for folder in ("dest", "state", "home"):
        (world_dir / folder).mkdir()
    owned_by_nobody(world_dir)
    return case


def first_cycle_as_root(case: ChainCase) -> None:
    """Cycle 0 in process (quicker than as nobody), then hand the folders to nobody."""
    case.check(case.run_api())
    owned_by_nobody(case.state, case.dest)


def test_a_folder_that_becomes_unreadable_keeps_its_mirror(case: ChainCase) -> None:
    first_cycle_as_root(case)
    os.chmod(case.src / "closed", 0o000)
    write_file(case.src / "open" / "new.txt", b"new\n", 0o644)
    owned_by_nobody(case.src / "open")
    result = case.protect()
    assert result.rc == 0, result.err
    summary = result.summary()
    assert summary["changes"]["removed"] == 0 and summary["changes"]["created"] == 1
    assert any("closed" in w and "kept" in w for w in warnings_of(result))
    # Root reads the whole source: the mirror must still hold the closed folder.
    case.check(summary)
    inodes = image_inodes(case.flat(1), case.work("inodes"))
    assert {b"/closed/b.txt", b"/closed/sub/c.txt"} <= set(inodes)
    assert inodes[b"/closed"].mode & 0o777 == 0  # its mode was mirrored


# Regression, fixed (src/strongroom/protect/vhd_mode.py first_cycle / e2fs.make_filesystem): the
# first cycle hands the tree to `mke2fs -d`, which stops at the first folder it
# cannot enter ("Permission denied while populating file system"), although the
# scan only warned about it: a tree with one unreadable folder never gets a first
# cycle. Later cycles keep such a folder with a warning; the first should too.
def test_a_first_cycle_with_an_unreadable_folder(case: ChainCase) -> None:
    os.chmod(case.src / "closed", 0o000)
    result = case.protect()
    assert result.rc == 0, result.err
    assert any("closed" in w for w in warnings_of(result))


# Regression, fixed (src/strongroom/protect/translate.py `write` lines, e2fs.run_debugfs): a file
# the user cannot read makes debugfs's `write` fail ("Permission denied while
# opening ... to copy"), and with it the whole cycle, every cycle, for as long as
# the file is there. The backup command reports unreadable files and goes on
# (exit 3); the VHD mode should skip such a file with a warning and retry later.
def test_an_unreadable_file_does_not_stop_protection(case: ChainCase) -> None:
    first_cycle_as_root(case)
    write_file(case.src / "open" / "secret", b"root only\n", 0o600)  # owned by root
    write_file(case.src / "open" / "fine", b"readable\n", 0o644)
    os.chown(case.src / "open" / "fine", NOBODY, NOBODY)
    result = case.protect()
    assert result.rc in (0, 3), result.err
    assert any("secret" in w for w in warnings_of(result))
    case.check(result.summary(), skipped=(b"/open/secret",))
