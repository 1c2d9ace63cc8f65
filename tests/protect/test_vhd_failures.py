"""The VHD backup mode when things go wrong: a shipment that fails or a process that
dies (before or after the VHD arrived), names debugfs cannot say, a full metadata
disk, a second run on the same state folder, a state folder of another source."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from strongroom.errors import TransientStorageError
from strongroom.protect.vhd_mode import ProtectOptions, StateFolder
from strongroom.services.protect import protect_once
from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.marks import ROOT
from tests.helpers.tree import random_bytes, write_file
from tests.protect.chain_case import ChainCase, warnings_of
from tests.protect.crashing import Failing, fail_once, nothing
from tests.protect.mirror import MiB, need, need_e2fsprogs

pytestmark = ROOT

PROJECT = Path(__file__).resolve().parents[2]
BIG = b"\x01" * (24 * MiB)  # more than a 16 MiB metadata disk holds


@pytest.fixture
def case(tmp_path: Path, cli: CliRunner) -> ChainCase:
    need_e2fsprogs()
    need("vhdiinfo")
    case = ChainCase(cli, tmp_path)
    write_file(case.src / "a.txt", b"first\n")
    write_file(case.src / "sub" / "b.bin", random_bytes(200_000, 1))
    case.check(case.run_api())
    return case


def change(src: Path, step: int) -> None:
    """A cycle's worth of changes: a new file, a rewritten one, a mode."""
    write_file(src / "sub" / f"new-{step}.bin", random_bytes(50_000, 10 + step))
    write_file(src / "a.txt", b"changed %d\n" % step)
    os.chmod(src / "sub", 0o700 + step % 8)


def api_cycle(case: ChainCase, dest: Failing) -> object:
    options = ProtectOptions(name=case.name, size=32 * MiB)
    return protect_once(str(case.src), dest, options, str(case.state))


def pending(case: ChainCase) -> object:
    return json.loads((case.state / "state.json").read_text()).get("pending")


def crash(case: ChainCase, when: str) -> None:
    """One cycle in another process, killed (SIGKILL) `when` it ships."""
    argv = [str(case.src), str(case.dest), str(case.state), str(32 * MiB), when]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.protect.crashing", *argv],
        cwd=PROJECT,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


# --- a shipment that fails ------------------------------------------------------------


def test_ship_failing_after_the_vhd_arrived(case: ChainCase) -> None:
    change(case.src, 1)
    dest = Failing(str(case.dest), nothing, fail_once("the connection dropped after upload"))
    with pytest.raises(TransientStorageError):
        api_cycle(case, dest)
    assert dest.shipped == [1]
    # The cycle arrived: it is the chain's cycle 1 now, whoever settles it.
    assert len(case.files()) == 2
    again = case.run()
    assert again["kind"] == "none", again
    assert again["recovered"] == "" or "committed" in again["recovered"]
    assert pending(case) is None
    case.check_chain()
    change(case.src, 2)
    two = case.run_api()
    assert two["cycle"] == 2
    case.check(two)


def test_ship_failing_before_shipping_ships_the_same_changes_next_time(
    case: ChainCase,
) -> None:
    change(case.src, 1)
    dest = Failing(str(case.dest), fail_once("the destination is unreachable"), nothing)
    with pytest.raises(TransientStorageError):
        api_cycle(case, dest)
    assert dest.shipped == [] and len(case.files()) == 1
    assert pending(case) is None
    one = case.run()
    assert one["cycle"] == 1 and one["changes"]["created"] == 1
    assert one["changes"]["rewritten"] == 1
    case.check(one)


# Regression, fixed (src/strongroom/protect/e2fs.py, roll_back): `e2undo -f` restores the blocks
# and then, because of -f, marks the file system for checking: it clears
# EXT2_VALID_FS in s_state ("Filesystem state: not clean"), sets s_wtime and the
# superblock checksum. So the rolled-back metadata disk is not the one before the
# cycle: it differs from the chain's disk in block 0 until a later cycle happens to
# rewrite the superblock, and that cycle then ships a file system marked not clean.
def test_ship_failing_before_shipping_rolls_the_metadata_disk_back(case: ChainCase) -> None:
    before = case.disk.read_bytes()
    change(case.src, 1)
    dest = Failing(str(case.dest), fail_once("the destination is unreachable"), nothing)
    with pytest.raises(TransientStorageError):
        api_cycle(case, dest)
    assert case.disk.read_bytes() == before


# --- a process that dies ----------------------------------------------------------------


def test_killed_after_the_vhd_arrived(case: ChainCase) -> None:
    change(case.src, 1)
    crash(case, "after")
    assert pending(case) is not None  # the kill left the cycle unsettled
    assert len(case.files()) == 2
    settled = case.run()
    assert "cycle 1" in settled["recovered"] and "committed" in settled["recovered"]
    assert settled["kind"] == "none"
    assert pending(case) is None
    case.check_chain()
    change(case.src, 2)
    case.check(case.run_api())


def test_killed_before_shipping(case: ChainCase) -> None:
    change(case.src, 1)
    crash(case, "before")
    assert pending(case) is not None and len(case.files()) == 1
    again = case.run()
    assert "cycle 1" in again["recovered"] and "rolled it back" in again["recovered"]
    assert again["cycle"] == 1 and again["changes"]["created"] == 1
    case.check(again)


# Regression, fixed (src/strongroom/protect/vhd_mode.py, adopt_pending, with cycles.py commit and
# recover): commit() first renames tree.pending.msgpack over tree.msgpack, and only
# then writes state.json without "pending". A process that dies between the two
# leaves a pending cycle that has arrived and no tree.pending.msgpack: the next
# run's recover() calls adopt_pending() again, whose rename raises
# FileNotFoundError, and so does every run after it. The state reproduces that
# moment exactly: a kill after the shipment, then commit's first step.
def test_killed_between_the_two_steps_of_commit(case: ChainCase) -> None:
    change(case.src, 1)
    crash(case, "after")
    os.replace(case.state / "tree.pending.msgpack", case.state / "tree.msgpack")
    settled = case.run()
    assert "committed" in settled["recovered"]
    case.check_chain()


# --- names and entries debugfs cannot mirror -------------------------------------------


def test_a_name_with_a_newline_is_skipped_with_a_warning(case: ChainCase) -> None:
    write_file(case.src / "sub" / "new\nline", b"cannot be said to debugfs\n")
    write_file(case.src / "plain", b"can\n")
    result = case.protect()
    assert result.rc == 0, result.err
    summary = result.summary()
    assert any("new\nline" in w for w in warnings_of(result)), result.out
    assert any("new\nline" in w for w in summary["warnings"])
    case.check(summary, skipped=(b"/sub/new\nline",))


# Regression, fixed (src/strongroom/protect/vhd_mode.py next_cycle, with formats/e2undo.py and
# e2fs.roll_back): a cycle whose every change is skipped (a name with a newline, a
# socket) still runs debugfs, with an empty script. Its undo file then records no
# block and has block size 0 in its header: read_undo_log raises UndoFileError,
# the rollback's `e2undo` refuses the same file ("Corrupt undo file header"), and
# the pending cycle stays in state.json: every later run fails with "e2undo could
# not roll the metadata disk back", for good.
@pytest.mark.parametrize("kind", ["newline", "socket"])
def test_a_cycle_with_only_skipped_changes(case: ChainCase, kind: str) -> None:
    if kind == "newline":
        write_file(case.src / "new\nline", b"x")
        skipped = b"/new\nline"
    else:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(case.src / "sub" / "sock"))
        skipped = b"/sub/sock"
    first = case.run()  # the folder's mtime changed too: this cycle ships
    case.check(first, skipped=(skipped,))
    for _ in range(2):
        result = case.protect()
        assert result.rc == 0, result.err
        assert result.summary()["kind"] == "none"
    change(case.src, 2)
    case.check(case.run_api(), skipped=(skipped,))


# --- a full metadata disk ----------------------------------------------------------------


def test_a_full_metadata_disk_fails_the_cycle_and_keeps_the_state(
    tmp_path: Path, cli: CliRunner
) -> None:
    need_e2fsprogs()
    case = ChainCase(cli, tmp_path, size="16M")
    write_file(case.src / "a.txt", b"small\n")
    case.check(case.run_api())
    write_file(case.src / "big.bin", BIG)
    full = case.protect()
    assert full.rc == 1, full.err
    assert "full" in assert_one_line_error(full)
    assert pending(case) is None and len(case.files()) == 1
    os.unlink(case.src / "big.bin")
    write_file(case.src / "b.txt", b"fits\n")
    one = case.run()
    assert one["cycle"] == 1
    case.check(one)


def test_a_full_disk_then_a_metadata_only_cycle(tmp_path: Path, cli: CliRunner) -> None:
    """After a rolled-back cycle, a cycle that does not rewrite the superblock
    must still leave the chain equal to the metadata disk (see the e2undo bug)."""
    need_e2fsprogs()
    case = ChainCase(cli, tmp_path, size="16M")
    write_file(case.src / "a.txt", b"small\n")
    case.check(case.run_api())
    write_file(case.src / "big.bin", BIG)
    assert case.protect().rc == 1
    os.unlink(case.src / "big.bin")  # what is left: the root folder's times
    one = case.run()
    case.check(one)


def test_a_first_cycle_too_big_for_the_disk(tmp_path: Path, cli: CliRunner) -> None:
    need_e2fsprogs()
    case = ChainCase(cli, tmp_path, size="16M")
    write_file(case.src / "big.bin", BIG)
    result = case.protect()
    assert result.rc == 1
    assert "small" in assert_one_line_error(result)
    assert case.files() == []
    os.unlink(case.src / "big.bin")
    write_file(case.src / "a.txt", b"a\n")
    case.check(case.run_api())


# --- the state folder ---------------------------------------------------------------------


def test_a_second_run_on_the_same_state_folder_is_refused(case: ChainCase) -> None:
    change(case.src, 1)
    holder = StateFolder(str(case.state))  # another run holds it
    try:
        busy = case.protect()
        assert busy.rc == 1
        assert "in use" in assert_one_line_error(busy)
    finally:
        holder.close()
    assert len(case.files()) == 1
    case.check(case.run_api())


def test_a_state_folder_of_another_source_is_refused(case: ChainCase, cli: CliRunner) -> None:
    other = case.root / "other"
    write_file(other / "x", b"x\n")
    before = sorted(p.name for p in case.state.iterdir())
    for args in (
        [str(other), "--name", "src"],
        [str(other)],
        [str(case.src), "--name", "renamed"],
    ):
        result = cli("protect", *args, "--to", str(case.dest), "--state", str(case.state), "--json")
        assert result.rc == 1, result.out
        assert "another --state folder" in assert_one_line_error(result)
    assert sorted(p.name for p in case.state.iterdir()) == before
    assert len(case.files()) == 1
    change(case.src, 1)
    case.check(case.run_api())


def test_a_damaged_state_document_is_a_one_line_error(case: ChainCase) -> None:
    (case.state / "state.json").write_text("{not json")
    result = case.protect()
    assert result.rc == 1
    assert "state" in assert_one_line_error(result)


# Regression, fixed (src/strongroom/cli/commands/protect.py, --vhd-block-size): the value is not
# checked before the first cycle, so a block size that is not a power of two in
# 4 KiB..256 MiB reaches write_vhd and comes out as "internal error: ValueError"
# (exit 1) after the metadata disk was built, instead of a usage error (exit 2).
def test_a_bad_vhd_block_size_is_a_usage_error(tmp_path: Path, cli: CliRunner) -> None:
    need_e2fsprogs()
    case = ChainCase(cli, tmp_path, size="16M")
    write_file(case.src / "a.txt", b"a\n")
    for size in ("3M", "256", "512M"):  # not a power of two, too small, too large
        result = case.protect("--vhd-block-size", size)
        assert result.rc == 2, result.err
        assert "internal error" not in result.err
        assert "block size" in assert_one_line_error(result)
        assert case.files() == []
