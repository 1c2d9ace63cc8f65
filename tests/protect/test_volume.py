"""Protected volumes (services/volumes.py, services/volume_cycle.py) with the real
tools: qemu-storage-daemon's FUSE export, a loop device, ext4, fsfreeze.

Each point is restored to a raw image, checked with `e2fsck -fn`, mounted
read-only and compared with the writer's log: every write acknowledged before
the cycle's freeze is there, whole, and none started after its thaw.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.errors import UsageError
from strongroom.repository.repo import Repository
from strongroom.services.image_restore import restore_image
from strongroom.services.volume_cycle import VolumeCycleResult, volume_cycle
from strongroom.services.volumes import (
    attach_volume,
    create_volume,
    detach_volume,
    node_bitmaps,
    volume_status,
)
from strongroom.sources.qmp import QmpClient
from strongroom.sources.volume import daemon_alive
from strongroom.sources.volume_state import NODE, VolumeState, load_state, volumes_dir
from tests.helpers.volumes import (
    MiB,
    Writer,
    assert_detached,
    check_writes,
    clean_everything,
    mounted_ro,
    needs_volumes,
    payload,
    run,
)

pytestmark = needs_volumes


@dataclass
class Vol:
    image: Path
    mount: Path
    state: VolumeState
    tmp: Path


@pytest.fixture
def vol(tmp_path: Path) -> Iterator[Vol]:
    image, mount = tmp_path / "vol.qcow2", tmp_path / "mnt"
    mount.mkdir()
    try:
        create_volume(str(image), 96 * MiB)
        state = attach_volume(str(image), str(mount))
        yield Vol(image, mount, state, tmp_path)
    finally:
        clean_everything(volumes_dir(), [mount, tmp_path / "check"])


def restored(repo: Repository, result: VolumeCycleResult, tmp: Path) -> Path:
    raw = tmp / f"{result.point.short_id}.raw"
    restore_image(repo, result.point, str(raw))
    return raw


def test_cycles_under_a_writer_hold_exactly_the_acknowledged_writes(
    vol: Vol, local_repo: Repository
) -> None:
    writer = Writer(vol.mount).start()
    results = []
    try:
        for _ in range(4):
            time.sleep(0.3)
            results.append(volume_cycle(local_repo, vol.state))
    finally:
        writer.stop()
    assert not writer.error
    assert [r.tracker for r in results] == ["full", "bitmap", "bitmap", "bitmap"]
    assert all(r.consistency == "application-consistent" for r in results)
    for r in results:
        assert r.held_ms is not None and r.held_ms < 2000
        assert r.point.summary["held_ms"] == pytest.approx(r.held_ms, abs=0.01)
        assert r.frozen_at is not None and r.thawed_at is not None
        # Dated at the frozen instant (what `restore --at` compares with).
        assert r.frozen_at <= r.point.time.timestamp() <= r.thawed_at
    for r in results:
        raw = restored(local_repo, r, vol.tmp)
        fsck = run("e2fsck", "-fn", raw)
        assert fsck.returncode == 0, fsck.stdout.decode()
        with mounted_ro(raw, vol.tmp / "check") as root:
            assert r.frozen_at is not None and r.thawed_at is not None
            present = check_writes(root, writer.log, r.frozen_at, r.thawed_at)
        assert present  # the writer was writing
        raw.unlink()
    # The record says what the last cycle did.
    state = load_state(str(vol.image))
    assert state is not None and state.last_point == results[-1].point.id
    assert state.in_sync and state.held_ms == pytest.approx(results[-1].held_ms or 0)
    # Only the last cycle's bitmap is left on the node, and it records.
    bitmaps = node_bitmaps(state)
    assert [b["name"] for b in bitmaps] == [results[-1].summary["bitmap"]]
    assert bitmaps[0]["recording"] and bitmaps[0]["persistent"]


def test_an_incremental_cycle_reads_only_the_dirty_blocks(vol: Vol, local_repo: Repository) -> None:
    bs = 64 * 1024
    first = volume_cycle(local_repo, vol.state, block_size=bs)
    (vol.mount / "two").write_bytes(os.urandom(2 * MiB))
    os.sync()
    second = volume_cycle(local_repo, vol.state)
    s = second.summary
    assert second.tracker == "bitmap" and s["block_size"] == bs
    blocks = s["blocks"]
    # What was read is what the bitmap marked: about the 2 MiB written plus
    # the file system's metadata, a small part of the 96 MiB disk.
    assert s["blocks_examined"] * bs <= s["dirty_bytes"] + bs
    assert 2 * MiB <= s["blocks_examined"] * bs <= 6 * MiB
    assert s["blocks_examined"] < blocks // 10
    assert first.summary["blocks_examined"] == blocks
    # The point is still the whole disk, sharing the rest with its parent.
    raw = restored(local_repo, second, vol.tmp)
    assert raw.stat().st_size == 96 * MiB
    with mounted_ro(raw, vol.tmp / "check") as root:
        assert (root / "two").read_bytes() == (vol.mount / "two").read_bytes()
    raw.unlink()
    # A bitmap removed behind strongroom's back: the next cycle compares, says so.
    with QmpClient(vol.state.qmp) as qmp:
        qmp.execute("block-dirty-bitmap-remove", {"node": NODE, "name": second.summary["bitmap"]})
    (vol.mount / "three").write_bytes(payload(3))
    third = volume_cycle(local_repo, vol.state)
    assert third.tracker == "compare" and "is gone" in third.summary["tracker_note"]
    raw = restored(local_repo, third, vol.tmp)
    with mounted_ro(raw, vol.tmp / "check") as root:
        assert (root / "three").read_bytes() == payload(3)


def test_a_killed_daemon_is_noticed_compared_and_detach_cleans_up(
    vol: Vol, local_repo: Repository
) -> None:
    writer = Writer(vol.mount).start()
    try:
        time.sleep(0.3)
        volume_cycle(local_repo, vol.state)
        time.sleep(0.3)
        killed_at = time.time()
        os.kill(vol.state.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while daemon_alive(vol.state) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        writer.stop()
    second = volume_cycle(local_repo, vol.state)
    assert second.tracker == "compare"
    assert "daemon" in second.summary["tracker_note"]
    assert second.consistency == "crash-consistent"
    assert any("not running" in w for w in second.warnings)
    state = load_state(str(vol.image))
    assert state is not None and not state.in_sync
    status = volume_status(state)
    assert not status["in_sync"] and not status["daemon"]["running"]
    # The point holds every write acknowledged before the kill, none started after.
    raw = restored(local_repo, second, vol.tmp)
    assert run("e2fsck", "-fy", raw).returncode in (0, 1)  # replays the journal
    fsck = run("e2fsck", "-fn", raw)
    assert fsck.returncode == 0, fsck.stdout.decode()
    with mounted_ro(raw, vol.tmp / "check") as root:
        check_writes(root, writer.log, killed_at, killed_at)
    raw.unlink()
    # Detach cleans what is left and says what it found.
    result = detach_volume(str(vol.mount))
    assert any("was not running" in line for line in result.found)
    assert any("FUSE export" in line for line in result.done)
    assert_detached(vol.state)
    # Attached again: the bitmap the daemon held died with it (QEMU writes a
    # persistent bitmap at a clean close; one loaded from the image would be
    # marked inconsistent): the next cycle compares, says why, and is exact.
    again = attach_volume(str(vol.image), str(vol.mount))
    (vol.mount / "after").write_bytes(payload(7))
    third = volume_cycle(local_repo, again)
    assert third.tracker == "compare" and "dirty bitmap" in third.summary["tracker_note"]
    raw = restored(local_repo, third, vol.tmp)
    with mounted_ro(raw, vol.tmp / "check") as root:
        assert (root / "after").read_bytes() == payload(7)
    detach_volume(str(vol.image))
    assert_detached(again)


def test_detach_leaves_nothing_and_the_bitmap_persists_across_attaches(
    vol: Vol, local_repo: Repository
) -> None:
    volume_cycle(local_repo, vol.state)
    with pytest.raises(UsageError, match="already attached"):
        attach_volume(str(vol.image), str(vol.tmp))
    result = detach_volume(str(vol.mount))
    assert result.found == []
    assert any("quit" in line for line in result.done)
    assert_detached(vol.state)
    # Cleanly closed, the persistent bitmap kept its record: the lineage goes on.
    again = attach_volume(str(vol.image), str(vol.mount))
    (vol.mount / "new").write_bytes(payload(3))
    cycle = volume_cycle(local_repo, again)
    assert cycle.tracker == "bitmap", cycle.summary.get("tracker_note")
    detach_volume(str(vol.image))
    assert_detached(again)
    with pytest.raises(UsageError, match="no attached volume"):
        detach_volume(str(vol.mount))


def test_a_failed_freeze_gives_a_crash_consistent_point(vol: Vol, local_repo: Repository) -> None:
    """A quiesce that fails to enter (a hook, a watchdog) never stops the cycle."""
    from contextlib import contextmanager

    from strongroom.errors import SourceError

    @contextmanager
    def refuses(mount: str) -> Iterator[None]:
        raise SourceError(f"hook refused {mount}")
        yield

    result = volume_cycle(local_repo, vol.state, quiesce=refuses)
    assert result.consistency == "crash-consistent"
    assert "hook refused" in result.summary["consistency_note"]
    assert result.held_ms is None


def test_a_quiesce_may_hold_writers_yet_say_the_point_is_crash_consistent(
    vol: Vol, local_repo: Repository
) -> None:
    """The hooks engine plugs in as `quiesce`: its value, a reason, is recorded."""
    from contextlib import contextmanager

    from strongroom.sources.volume import fsfreeze

    calls = []

    @contextmanager
    def hooks(mount: str) -> Iterator[str]:
        calls.append(mount)
        with fsfreeze(mount):
            yield "post hook failed"

    result = volume_cycle(local_repo, vol.state, quiesce=hooks)
    assert calls == [str(vol.mount)]
    assert result.consistency == "crash-consistent" and result.held_ms is not None
    assert result.point.summary["consistency_note"] == "post hook failed"
