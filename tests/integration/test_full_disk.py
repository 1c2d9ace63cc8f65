"""A real full disk: the repository on a 20 MiB tmpfs, a 50 MiB backup."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.compare import walk_differences
from tests.helpers.marks import ROOT
from tests.helpers.tree import random_bytes, write_file

pytestmark = ROOT  # mounting
MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_backup_onto_a_full_disk(tmp_path: Path, cli: CliRunner, small_disk: Path) -> None:
    src = tmp_path / "src"
    for i in range(10):
        write_file(src / f"{i}.bin", random_bytes(5 * MiB, i))
    env = {"STRONGROOM_REPO": str(small_disk / "repo")}
    assert cli("init", env=env).rc == 0

    full = cli("backup", str(src), env=env)
    assert full.rc == 1
    assert_one_line_error(full, "no space left")
    assert not list((small_disk / "repo" / "points").glob("*"))

    check = cli("check", "--read-data", env=env)
    assert check.rc == 0, check.err

    # More room: the same repository takes the backup, and it restores exactly.
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    done = cli("backup", str(src), "--json", env=env)
    assert done.rc == 0, done.err
    assert done.summary()["data_added"] < 50 * MiB  # what fitted before is reused
    target = tmp_path / "restore"
    assert cli("restore", "latest", "--target", str(target), env=env).rc == 0
    assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []
    assert cli("check", "--read-data", env=env).rc == 0
    # prune removes the leftovers of the failed run (orphan packs, temporary files).
    assert cli("prune", env=env).rc == 0
    assert not list((small_disk / "repo" / "tmp").glob("*"))
