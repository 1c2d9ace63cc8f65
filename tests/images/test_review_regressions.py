"""Regressions for defects a review found: each was a way to store the wrong disk or
miss a change silently, reproduced with the real tools before the fix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.block_servers import StorageDaemon, live_backup
from tests.helpers.images import (
    BS,
    MiB,
    backup,
    needs,
    qemu_io,
    restore_and_compare,
    run,
    to_raw,
    write_random,
)

pytestmark = needs("qemu-img", "qemu-io", "qemu-nbd")


def test_a_raw_disk_stays_raw_when_its_guest_writes_a_qcow2_header(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """The format is pinned by the first point: a guest cannot make strongroom read
    another disk (or a host file named as backing) by writing a header."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 16 * MiB)
    write_random(disk, 4 * MiB, 2 * MiB, seed=1)
    first = backup(cli, disk, "--block-size", str(BS))
    secret = tmp_path / "hostfile"
    secret.write_bytes(b"secret-host-data" * 4096)
    header = tmp_path / "evil.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", header, "1M")
    with open(disk, "r+b") as f:
        f.write(header.read_bytes())
    second = backup(cli, disk)
    assert second["parent"] == first["point_id"]
    assert second["size"] == 16 * MiB
    restore_and_compare(cli, second["point_id"], disk, tmp_path)  # the raw bytes, header and all


def test_shrink_then_grow_between_backups_is_not_missed(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "d.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", disk, "64M")
    qemu_io(disk, "write -P 0x31 0 1M", "write -P 0x32 40M 1M")
    backup(cli, disk)
    run("qemu-img", "resize", "-q", "--shrink", disk, "32M")
    run("qemu-img", "resize", "-q", disk, "64M")
    second = backup(cli, disk)
    assert second["tracker"] == "bitmap"
    restore_and_compare(cli, second["point_id"], to_raw(disk, tmp_path / "now.raw"), tmp_path)


def test_a_bitmap_started_after_the_parent_point_is_not_trusted(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "d.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", disk, "64M")
    qemu_io(disk, "write -P 0x11 0 4M")
    backup(cli, disk, "--changed-since", "compare")
    qemu_io(disk, "write -P 0x22 8M 1M")  # before the user's bitmap exists
    run("qemu-img", "bitmap", "--add", disk, "mybm")
    qemu_io(disk, "write -P 0x33 16M 1M")
    second = backup(cli, disk, "--changed-since", "bitmap:mybm")
    assert second["tracker"] == "compare" and "lineage" in second["tracker_note"]
    restore_and_compare(cli, second["point_id"], to_raw(disk, tmp_path / "now.raw"), tmp_path)


def test_a_write_to_a_backing_file_makes_the_bitmap_tracker_compare(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    base, mid = tmp_path / "base.qcow2", tmp_path / "mid.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
    qemu_io(base, "write -P 0x41 0 2M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", mid)
    qemu_io(mid, "write -P 0x42 8M 1M")
    backup(cli, mid, "--allow-backing")
    qemu_io(base, "write -P 0x43 0 1M")  # below the top: its bitmap cannot see it
    second = backup(cli, mid, "--allow-backing")
    assert second["tracker"] == "compare" and "backing file" in second["tracker_note"]
    restore_and_compare(cli, second["point_id"], to_raw(mid, tmp_path / "now.raw"), tmp_path)


def test_auto_backs_up_an_image_it_cannot_write(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """No dirty bitmap can be started on read-only storage: auto backs up without."""
    disk = tmp_path / "d.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", disk, "16M")
    qemu_io(disk, "write -P 0x51 0 2M")
    os.chmod(disk, 0o444)
    if os.access(disk, os.W_OK):  # root ignores modes: use a read-only bind instead
        ro = tmp_path / "ro"
        ro.mkdir()
        shutil.copy(disk, ro / "d.qcow2")
        if run("mount", "--bind", "-o", "ro", ro, ro, check=False).returncode != 0:
            return  # cannot make read-only storage here
        try:
            result = backup(cli, ro / "d.qcow2")
        finally:
            run("umount", ro, check=False)
    else:
        result = backup(cli, disk)
    assert result["blocks_read"] == 2 * MiB // (1 * MiB)


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
