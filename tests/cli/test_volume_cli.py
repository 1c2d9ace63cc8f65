"""`strongroom volume`: the real program, as root, on a small volume."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.sources.volume import daemon_alive, mount_of
from strongroom.sources.volume_state import VolumeState, iter_states, volumes_dir
from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.volumes import MiB, assert_detached, clean_everything, needs_volumes, payload

pytestmark = needs_volumes


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "mnt"
    where.mkdir()
    try:
        yield where
    finally:
        clean_everything(volumes_dir(), [where, tmp_path / "check"])


def _state() -> VolumeState:
    found = [s for s in iter_states() if isinstance(s, VolumeState)]
    assert len(found) == 1
    return found[0]


def test_create_attach_cycle_status_detach(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path, mount: Path
) -> None:
    image = tmp_path / "v.qcow2"
    r = cli("volume", "create", str(image), "--size", "64M", "--json")
    assert r.rc == 0, r.err
    assert json.loads(r.out.splitlines()[-1])["size"] == 64 * MiB
    assert_one_line_error(cli("volume", "create", str(image), "--size", "64M"), "exists")
    r = cli("volume", "attach", str(image), "--mount", str(mount))
    assert r.rc == 0, r.err
    state = _state()
    assert mount_of(str(mount)) == ("ext4", state.loop)
    (mount / "a").write_bytes(payload(1))
    r = cli("volume", "cycle", str(mount), "--json")
    assert r.rc == 0, r.err
    first = json.loads(r.out.splitlines()[-1])
    assert first["consistency"] == "application-consistent" and first["tracker"] == "full"
    (mount / "b").write_bytes(payload(2))
    r = cli("volume", "cycle", str(image), "--json")
    second = json.loads(r.out.splitlines()[-1])
    assert second["tracker"] == "bitmap" and second["parent"] == first["point_id"]
    assert second["held_ms"] > 0
    r = cli("volume", "status", "--json")
    (doc,) = json.loads(r.out)
    assert doc["daemon"]["running"] and doc["loop"]["present"] and doc["mounted"]
    assert doc["in_sync"] and doc["last_point"] == second["point_id"] and not doc["problems"]
    assert [b["persistent"] for b in doc["bitmaps"]] == [True]
    r = cli("volume", "list", "--json")
    assert json.loads(r.out) == [
        {"image": str(image), "mount": str(mount), "format": "qcow2", "fs": "ext4"}
    ]
    # The point restores as a disk image.
    raw = tmp_path / "restored.raw"
    r = cli("restore", second["point_id"], "--target", str(raw))
    assert r.rc == 0, r.err
    assert raw.stat().st_size == 64 * MiB
    r = cli("volume", "detach", str(mount), "--json")
    assert r.rc == 0, r.err
    done = json.loads(r.out.splitlines()[-1])
    assert done["found"] == [] and len(done["done"]) == 3
    assert_detached(state)
    assert json.loads(cli("volume", "list", "--json").out) == []


def test_detach_of_a_half_dead_volume_cleans_up_and_says_what_it_found(
    cli: CliRunner, tmp_path: Path, mount: Path
) -> None:
    image = tmp_path / "v.raw"
    assert cli("volume", "create", str(image), "--size", "32M", "--format", "raw").rc == 0
    assert cli("volume", "attach", str(image), "--mount", str(mount)).rc == 0
    state = _state()
    os.kill(state.pid, signal.SIGKILL)
    while daemon_alive(state):
        time.sleep(0.01)
    r = cli("volume", "status", "--json")
    (doc,) = json.loads(r.out)
    assert not doc["daemon"]["running"] and not doc["in_sync"]
    assert any("not running" in p for p in doc["problems"])
    r = cli("volume", "detach", str(image))
    assert r.rc == 0, r.err
    assert "was not running" in r.err
    assert "removed the dead daemon's FUSE export" in r.out
    assert_detached(state)


def test_bad_input_is_one_line_and_leaves_nothing(
    cli: CliRunner, tmp_path: Path, mount: Path
) -> None:
    missing = tmp_path / "none.qcow2"
    assert_one_line_error(cli("volume", "attach", str(missing), "--mount", str(mount)), "no such")
    assert_one_line_error(cli("volume", "detach", str(mount)), "no attached volume")
    assert_one_line_error(
        cli("volume", "create", str(tmp_path / "t.qcow2"), "--size", "1M"), "16 MiB"
    )
    assert not (tmp_path / "t.qcow2").exists()
    # An image without a file system is not formatted by attach: the mount fails, all undone.
    blank = tmp_path / "blank.qcow2"
    assert os.system(f"qemu-img create -q -f qcow2 {blank} 32M") == 0
    r = cli("volume", "attach", str(blank), "--mount", str(mount))
    assert_one_line_error(r, "cannot mount")
    assert list(iter_states()) == [] and mount_of(str(mount)) is None
    # A busy file system is never unmounted lazily: detach stops, changes nothing.
    image = tmp_path / "v.qcow2"
    assert cli("volume", "create", str(image), "--size", "32M").rc == 0
    assert cli("volume", "attach", str(image), "--mount", str(mount)).rc == 0
    with open(mount / "held", "wb"):
        r = cli("volume", "detach", str(mount))
        assert_one_line_error(r, "stop the programs using it")
        assert r.rc == 2
        assert mount_of(str(mount)) is not None and daemon_alive(_state())
    assert cli("volume", "detach", str(mount)).rc == 0
