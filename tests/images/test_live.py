"""A disk in use by a running block layer (qemu-storage-daemon), backed up through
QMP: a frozen view over NBD, dirty bitmaps rotated in the same transaction, and
nothing of the backup left in the block layer afterwards."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.block_servers import Background, BackgroundWriter, StorageDaemon, live_backup
from tests.helpers.cli import assert_one_line_error
from tests.helpers.images import (
    BS,
    MiB,
    list_points,
    needs,
    ours,
    restore_and_compare,
    run,
    touched,
)

pytestmark = needs("qemu-img", "qemu-io", "qemu-storage-daemon")

SIZE = 64 * MiB
WRITES = [  # (command, offset, length): between the first and the second backup
    ("write -P 0x21 {o} {n}", 1 * MiB + 512, 4096),
    ("write -P 0x22 {o} {n}", 9 * MiB - 4096, 8192),
    ("write -z {o} {n}", 30 * MiB, 128 * 1024),
    ("write -P 0x23 {o} {n}", 50 * MiB, 3 * MiB + 1),
]


def new_disk(path: Path) -> Path:
    run("qemu-img", "create", "-q", "-f", "qcow2", path, SIZE)
    return path


def assert_clean(daemon: StorageDaemon, scratch: Path, prefix: str = "strongroom-") -> str:
    """Exactly one bitmap of ours; no fleece node, export, job or file left. Its name."""
    names = daemon.bitmap_names()
    assert len(ours(names, prefix)) == 1, names
    assert daemon.leftovers() == []
    assert not scratch.exists() or os.listdir(scratch) == []
    (bitmap,) = [b for b in daemon.bitmaps() if b.get("name", "").startswith(prefix)]
    assert bitmap["persistent"] and bitmap["recording"] and not bitmap.get("inconsistent")
    return str(bitmap["name"])


def two_backups(
    cli: CliRunner, daemon: StorageDaemon, tmp_path: Path, tracker: str, prefix: str
) -> None:
    scratch = tmp_path / "scratch"
    daemon.write("write -P 0x11 0 8M", "write -P 0x12 30M 1M", "write -P 0x13 63M 1M")

    first = live_backup(cli, daemon, scratch, "--changed-since", tracker, "--block-size", str(BS))
    assert first["tracker"] == "full"
    assert first["bytes_read"] == 10 * MiB  # the frozen view reports the disk's holes
    bitmap1 = assert_clean(daemon, scratch, prefix)
    v1 = daemon.snapshot(tmp_path / "v1.raw")

    daemon.write(*(cmd.format(o=o, n=n) for cmd, o, n in WRITES))
    dirty = touched((o, n) for _, o, n in WRITES)

    second = live_backup(cli, daemon, scratch, "--changed-since", tracker)
    assert second["tracker"] == "bitmap" and second["tracker_note"] == ""
    assert second["parent"] == first["point_id"]
    assert second["blocks_examined"] == len(dirty)
    assert second["bytes_read"] <= len(dirty) * BS
    assert second["blocks_changed"] == len(dirty)
    bitmap2 = assert_clean(daemon, scratch, prefix)
    assert bitmap2 != bitmap1
    v2 = daemon.snapshot(tmp_path / "v2.raw")

    restore_and_compare(cli, first["point_id"], v1, tmp_path)
    restore_and_compare(cli, second["point_id"], v2, tmp_path)


def test_bitmap_named_by_the_user(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    disk = new_disk(tmp_path / "disk.qcow2")
    run("qemu-img", "bitmap", "--add", "-g", BS, disk, "mine")
    daemon = storage_daemon(disk)
    assert daemon.bitmap_names() == ["mine"]
    # The user's bitmap is adopted as the lineage's start, then replaced by mine.TOKEN.
    two_backups(cli, daemon, tmp_path, "bitmap:mine", "mine.")


def test_auto_keeps_its_own_lineage_across_a_clean_restart(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    disk = new_disk(tmp_path / "disk.qcow2")
    daemon = storage_daemon(disk)
    two_backups(cli, daemon, tmp_path, "auto", "strongroom-")

    # The bitmap is persistent: a clean restart keeps it, and the lineage goes on.
    daemon.stop()
    daemon.start()
    daemon.write("write -P 0x31 5M 64k")
    scratch = tmp_path / "scratch"
    third = live_backup(cli, daemon, scratch)
    assert third["tracker"] == "bitmap"
    assert third["blocks_examined"] == 1 and third["bytes_read"] == BS
    assert_clean(daemon, scratch)
    restore_and_compare(cli, third["point_id"], daemon.snapshot(tmp_path / "v3.raw"), tmp_path)


def test_rotation_loses_no_write_made_during_backups(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    """Writers never stop while three backups run; the bitmap each one starts
    must hold every write after its instant, so the last point (after the
    writers stop) equals the disk. (A gap of tens of milliseconds between the
    bitmap's start and the view's instant fails this test; a gap of one QMP
    round trip is too narrow for a writer to hit reliably.)"""
    disk = new_disk(tmp_path / "disk.qcow2")
    daemon = storage_daemon(disk)
    scratch = tmp_path / "scratch"
    daemon.write("write -P 0x11 0 16M", "write -P 0x12 40M 8M")
    live_backup(cli, daemon, scratch, "--block-size", str(BS))

    written = 0
    for cycle in range(3):
        writer = BackgroundWriter(daemon.nbd_uri, SIZE, seed=cycle, first_pattern=cycle * 80)
        try:
            time.sleep(0.2)
            s = live_backup(cli, daemon, scratch)
        finally:
            written += writer.stop()
        assert s["tracker"] == "bitmap", s
        assert s["bytes_read"] <= s["blocks_examined"] * BS
        assert_clean(daemon, scratch)
    assert written > 100

    final = live_backup(cli, daemon, scratch)
    assert final["tracker"] == "bitmap"
    assert_clean(daemon, scratch)
    restore_and_compare(cli, final["point_id"], daemon.snapshot(tmp_path / "now.raw"), tmp_path)


def test_point_is_the_disk_at_the_instant_though_writers_go_on(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
    background: Callable[..., Background],
) -> None:
    """Writes that start once the frozen view exists (so after its instant) and
    go on while the backup reads it do not reach the point: the view keeps the
    old contents of every block written meanwhile."""
    disk = new_disk(tmp_path / "disk.qcow2")
    daemon = storage_daemon(disk)
    scratch = tmp_path / "scratch"
    daemon.write("write -P 0xf1 0 64M")
    before = daemon.snapshot(tmp_path / "before.raw")
    job = background(
        "backup", "--image", daemon.nbd_uri, "--qmp", str(daemon.qmp),
        "--scratch", str(scratch), "--block-size", str(BS), "--json",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not any(x.startswith("export sr-view-") for x in daemon.leftovers()):
        assert job.proc.poll() is None, job.wait()
        assert time.monotonic() < deadline, "the frozen view never appeared"
        time.sleep(0.005)
    writer = BackgroundWriter(daemon.nbd_uri, SIZE, seed=7)
    try:
        rc, err = job.wait(60)
        during = writer.writes
    finally:
        writer.stop()
    assert rc == 0, err
    assert during > 0
    (point,) = list_points(cli)
    restore_and_compare(cli, point["id"], before, tmp_path)
    assert_clean(daemon, scratch)


def test_forced_trackers_still_rotate_bitmaps(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    disk = new_disk(tmp_path / "disk.qcow2")
    daemon = storage_daemon(disk)
    scratch = tmp_path / "scratch"
    daemon.write("write -P 0x11 0 4M")
    live_backup(cli, daemon, scratch, "--block-size", str(BS))
    for pattern, (mode, tracker) in enumerate([("compare", "compare"), ("none", "full")]):
        daemon.write(f"write -P {0x20 + pattern} {pattern}M 64k")
        s = live_backup(cli, daemon, scratch, "--changed-since", mode)
        assert s["tracker"] == tracker
        assert s["bytes_read"] == 4 * MiB  # every data block, not only the dirty one
        assert s["blocks_changed"] == 1  # counted against the parent either way
        assert_clean(daemon, scratch)
    # The lineage is intact: the next one is by bitmap again.
    daemon.write("write -P 0x13 2M 64k")
    s = live_backup(cli, daemon, scratch)
    assert s["tracker"] == "bitmap" and s["blocks_examined"] == 1
    restore_and_compare(cli, s["point_id"], daemon.snapshot(tmp_path / "now.raw"), tmp_path)


def test_wrong_node_or_source_is_refused_and_leaves_nothing(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    daemon = storage_daemon(new_disk(tmp_path / "disk.qcow2"))
    scratch = tmp_path / "scratch"
    qmp = ("--qmp", str(daemon.qmp), "--scratch", str(scratch))
    result = cli("backup", "--image", daemon.nbd_uri, *qmp, "--node", "nope")
    assert result.rc == 1
    assert_one_line_error(result, "nope", "disk0")  # the nodes there are, named
    result = cli("backup", "--image", str(tmp_path / "disk.qcow2"), *qmp)
    assert result.rc == 2 and "NBD URI" in result.err, result.err
    assert list_points(cli) == []
    assert daemon.bitmap_names() == [] and daemon.leftovers() == []
    assert not scratch.exists() or os.listdir(scratch) == []


@needs("qemu-storage-daemon")
def test_live_backup_of_a_raw_node(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    """A raw node cannot store persistent bitmaps: the lineage lives in memory."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 32 * MiB)
    daemon = storage_daemon(disk, fmt="raw")
    daemon.write("write -P 0x61 0 4M")
    scratch = tmp_path / "scratch"
    first = live_backup(cli, daemon, scratch)
    daemon.write("write -P 0x62 8M 1M")
    second = live_backup(cli, daemon, scratch)
    assert second["parent"] == first["point_id"] and second["tracker"] == "bitmap"
    assert second["blocks_read"] == 1
    snapshot = daemon.snapshot(tmp_path / "now.raw")
    restore_and_compare(cli, second["point_id"], snapshot, tmp_path)
