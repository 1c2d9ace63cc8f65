"""When the dirty-bitmap lineage is broken (bitmap removed, left inconsistent by a
crash, or split by a failed attempt), the backup is still exact: it compares
every block with the parent and says why, or reads the union of the bitmaps."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.block_servers import Background, QemuNbd, StorageDaemon, live_backup
from tests.helpers.images import (
    BS,
    MiB,
    backup,
    file_bitmaps,
    needs,
    ours,
    qemu_io,
    restore_and_compare,
    run,
    to_raw,
    touched,
)

pytestmark = needs("qemu-img", "qemu-io", "qemu-nbd")
needs_daemon = needs("qemu-storage-daemon")


def make_qcow2(path: Path, size: str = "32M") -> Path:
    run("qemu-img", "create", "-q", "-f", "qcow2", path, size)
    qemu_io(path, "write -P 0x11 0 4M", "write -P 0x12 20M 1M")
    return path


def only_bitmap(img: Path) -> dict[str, object]:
    (bitmap,) = [b for b in file_bitmaps(img) if b["name"].startswith("strongroom-")]
    return bitmap


# --- image files -------------------------------------------------------------


def test_removed_bitmap_falls_back_to_comparison(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    img = make_qcow2(tmp_path / "disk.qcow2")
    backup(cli, img, "--block-size", str(BS))
    name = str(only_bitmap(img)["name"])
    qemu_io(img, "write -P 0x21 1M 64k", "write -P 0x22 25M 64k")
    run("qemu-img", "bitmap", "--remove", img, name)

    result = cli("backup", "--image", str(img), "--json")
    assert result.rc == 0, result.err
    s = result.summary()
    assert s["tracker"] == "compare"
    assert "gone" in s["tracker_note"] and name in s["tracker_note"]
    assert name in result.err  # the note is shown to the user too
    assert s["blocks_changed"] == 2
    assert s["bytes_read"] == 5 * MiB + BS  # every data block, compared with the parent
    restore_and_compare(cli, s["point_id"], img, tmp_path, fmt="qcow2")

    # A new lineage started with that point.
    assert "auto" in only_bitmap(img)["flags"]
    qemu_io(img, "write -P 0x23 2M 64k")
    s = backup(cli, img)
    assert s["tracker"] == "bitmap" and s["blocks_examined"] == 1
    restore_and_compare(cli, s["point_id"], img, tmp_path, fmt="qcow2")


def test_bitmap_left_in_use_by_a_killed_writer_falls_back_to_comparison(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    img = make_qcow2(tmp_path / "disk.qcow2")
    backup(cli, img, "--block-size", str(BS))
    writer = QemuNbd(img, "qcow2", tmp_path / "writer")
    qemu_io(writer.uri, "write -P 0x31 3M 128k", "write -P 0x32 28M 64k", "flush", fmt="raw")
    writer.crash()  # SIGKILL: the bitmap stays marked in use
    assert "in-use" in only_bitmap(img)["flags"]
    expected = to_raw(img, tmp_path / "expected.raw")

    s = backup(cli, img)
    assert s["tracker"] == "compare"
    assert "inconsistent" in s["tracker_note"]
    assert s["blocks_changed"] == 3
    restore_and_compare(cli, s["point_id"], expected, tmp_path)
    # The inconsistent bitmap is retired; the new one records.
    bitmap = only_bitmap(img)
    assert "in-use" not in bitmap["flags"] and "auto" in bitmap["flags"]

    qemu_io(img, "write -P 0x33 0 64k")
    s = backup(cli, img)
    assert s["tracker"] == "bitmap" and s["blocks_examined"] == 1
    restore_and_compare(cli, s["point_id"], img, tmp_path, fmt="qcow2")


def test_bitmap_of_a_failed_attempt_is_read_with_the_parents(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """A failed attempt started its bitmap and stopped the parent's, then died
    before its point: the writes before it are in one bitmap, those after in
    the other; the next backup reads both."""
    img = make_qcow2(tmp_path / "disk.qcow2")
    first = backup(cli, img, "--block-size", str(BS))
    parent_bitmap = str(only_bitmap(img)["name"])
    prefix = parent_bitmap.rsplit(".", 1)[0]
    v1 = shutil.copy(img, tmp_path / "v1.qcow2")

    before = [(1 * MiB, 64 * 1024), (21 * MiB, 200 * 1024)]
    qemu_io(img, *(f"write -P 0x41 {o} {n}" for o, n in before))
    # What the attempt did in the image before it failed (OfflineBitmaps.checkpoint).
    run("qemu-img", "bitmap", "--add", "-g", BS, img, f"{prefix}.0badc0ffee00")
    run("qemu-img", "bitmap", "--disable", img, parent_bitmap)
    after = [(2 * MiB, 64 * 1024), (30 * MiB, 4096)]
    qemu_io(img, *(f"write -P 0x42 {o} {n}" for o, n in after))

    s = backup(cli, img)
    assert s["tracker"] == "bitmap", s["tracker_note"]
    assert s["parent"] == first["point_id"]
    dirty = touched(before + after)
    assert s["blocks_examined"] == len(dirty)
    assert s["blocks_changed"] == len(dirty)
    assert len(ours(b["name"] for b in file_bitmaps(img))) == 1
    restore_and_compare(cli, s["point_id"], img, tmp_path, fmt="qcow2")
    restore_and_compare(cli, first["point_id"], v1, tmp_path, fmt="qcow2")


def test_changed_since_bitmap_on_a_raw_file_is_a_usage_error(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"x" * 65536)
    for tracker in ("bitmap", "overlay"):
        result = cli("backup", "--image", str(raw), "--changed-since", tracker)
        assert result.rc == 2, result.err
        assert "raw image" in result.err and tracker in result.err
    result = cli("backup", "--image", str(raw), "--changed-since", "journal")
    assert result.rc == 2 and "--changed-since" in result.err
    assert cli("snapshots", "--json").json() == []


# --- a running block layer ---------------------------------------------------


@needs_daemon
def test_bitmap_removed_over_qmp_falls_back_to_comparison(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    daemon = storage_daemon(make_qcow2(tmp_path / "disk.qcow2"))
    scratch = tmp_path / "scratch"
    live_backup(cli, daemon, scratch, "--block-size", str(BS))
    (name,) = ours(daemon.bitmap_names())
    with daemon.control() as qmp:
        qmp.execute("block-dirty-bitmap-remove", {"node": daemon.NODE, "name": name})
    daemon.write("write -P 0x51 1M 64k")

    s = live_backup(cli, daemon, scratch)
    assert s["tracker"] == "compare"
    assert "gone" in s["tracker_note"] and name in s["tracker_note"]
    assert s["blocks_changed"] == 1
    assert len(ours(daemon.bitmap_names())) == 1 and daemon.leftovers() == []
    restore_and_compare(cli, s["point_id"], daemon.snapshot(tmp_path / "now.raw"), tmp_path)


@needs_daemon
def test_block_layer_crashes(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
) -> None:
    """A bitmap started in a running block layer is stored at a clean close only:
    after a crash it is gone; one the image held when the daemon opened it is
    left in use, and comes back inconsistent. Both mean: compare."""
    daemon = storage_daemon(make_qcow2(tmp_path / "disk.qcow2"))
    scratch = tmp_path / "scratch"
    live_backup(cli, daemon, scratch, "--block-size", str(BS))
    daemon.crash()
    daemon.start()
    daemon.write("write -P 0x61 1M 64k")
    s = live_backup(cli, daemon, scratch)
    assert s["tracker"] == "compare" and "gone" in s["tracker_note"], s
    restore_and_compare(cli, s["point_id"], daemon.snapshot(tmp_path / "v1.raw"), tmp_path)

    daemon.stop()  # clean: the bitmap is stored in the image
    daemon.start()  # ... and marked in use while the daemon has it
    daemon.write("write -P 0x62 2M 64k", "flush")
    daemon.crash()
    daemon.start()
    (bitmap,) = [b for b in daemon.bitmaps() if b.get("name", "").startswith("strongroom-")]
    assert bitmap.get("inconsistent")
    daemon.write("write -P 0x63 3M 64k")

    s = live_backup(cli, daemon, scratch)
    assert s["tracker"] == "compare"
    assert "inconsistent" in s["tracker_note"]
    assert s["blocks_changed"] == 2
    assert len(ours(daemon.bitmap_names())) == 1 and daemon.leftovers() == []
    restore_and_compare(cli, s["point_id"], daemon.snapshot(tmp_path / "v2.raw"), tmp_path)


def kill_live_backup_while_reading(
    daemon: StorageDaemon, scratch: Path, background: Callable[..., Background]
) -> None:
    """SIGKILL a (full) live backup once its frozen view is exported."""
    job = background(
        "backup", "--image", daemon.nbd_uri, "--qmp", str(daemon.qmp),
        "--scratch", str(scratch), "--changed-since", "none", "--json",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not any(x.startswith("export sr-view-") for x in daemon.leftovers()):
        assert job.proc.poll() is None, job.wait()
        assert time.monotonic() < deadline, "the frozen view never appeared"
        time.sleep(0.005)
    assert job.proc.poll() is None, "the backup ended before it could be killed"
    job.kill()


def random_disk(tmp_path: Path, daemon_start: Callable[..., StorageDaemon]) -> StorageDaemon:
    disk = tmp_path / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", disk, "96M")
    daemon = daemon_start(disk)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random.Random(5).randbytes(48 * MiB))
    daemon.write(f"write -s {noise} 0 48M")
    return daemon


@needs_daemon
def test_killed_live_backup_next_backup_is_exact(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
    background: Callable[..., Background],
) -> None:
    daemon = random_disk(tmp_path, storage_daemon)
    scratch = tmp_path / "scratch"
    first = live_backup(cli, daemon, scratch, "--block-size", str(BS))
    daemon.write("write -P 0x71 1M 1M")  # recorded by the parent's bitmap only
    kill_live_backup_while_reading(daemon, scratch, background)
    assert len(ours(daemon.bitmap_names())) == 2  # the attempt's bitmap stays
    daemon.write("write -P 0x72 60M 1M")  # recorded by the attempt's bitmap only

    s = live_backup(cli, daemon, scratch)
    assert s["tracker"] == "bitmap" and s["parent"] == first["point_id"]
    assert s["blocks_examined"] == 32
    restore_and_compare(cli, s["point_id"], daemon.snapshot(tmp_path / "now.raw"), tmp_path)


@needs_daemon
def test_killed_live_backup_leaves_nothing_after_the_next_one(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    storage_daemon: Callable[..., StorageDaemon],
    background: Callable[..., Background],
) -> None:
    daemon = random_disk(tmp_path, storage_daemon)
    scratch = tmp_path / "scratch"
    live_backup(cli, daemon, scratch, "--block-size", str(BS))
    kill_live_backup_while_reading(daemon, scratch, background)
    # Left behind meanwhile: a copy-before-write job that copies the old data of
    # every block written to the disk into the scratch file, for as long as it runs.
    assert daemon.leftovers() != []

    live_backup(cli, daemon, scratch)

    assert daemon.leftovers() == []
    assert list(scratch.iterdir()) == []
    assert len(ours(daemon.bitmap_names())) == 1


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
            pytest.skip("cannot make read-only storage here (a read-only bind mount failed)")
        try:
            result = backup(cli, ro / "d.qcow2")
        finally:
            run("umount", ro, check=False)
    else:
        result = backup(cli, disk)
    assert result["blocks_read"] == 2 * MiB // (1 * MiB)
