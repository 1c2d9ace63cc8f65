"""An NBD export as the source, without QMP: read as it stands; a dirty bitmap
the export offers is read when named (its rotation is the caller's business)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.block_servers import QemuNbd
from tests.helpers.images import (
    BS,
    QEMU,
    KiB,
    MiB,
    backup,
    qemu_io,
    restore_and_compare,
    run,
    touched,
)

pytestmark = QEMU


def test_exported_bitmap_is_read_when_named(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    img = tmp_path / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, "32M")
    qemu_io(img, "write -P 0x11 0 4M")
    workdir = tmp_path / "export"  # one socket path: one URI, one lineage

    def export(*extra: str) -> QemuNbd:
        return QemuNbd(img, "qcow2", workdir, True, *extra)

    server = export()
    try:
        first = backup(cli, server.uri, "--block-size", str(BS))
        uri = server.uri
    finally:
        server.stop()
    # The user's own change tracking: a bitmap, then writes.
    run("qemu-img", "bitmap", "--add", "-g", BS, img, "mine")
    writes = [(1 * MiB, 64 * KiB), (20 * MiB + 4 * KiB, 128 * KiB)]
    qemu_io(img, *(f"write -P 0x22 {o} {n}" for o, n in writes))

    server = export("--bitmap", "mine")
    try:
        assert server.uri == uri
        unnamed = cli("backup", "--image", uri, "--changed-since", "bitmap")
        assert unnamed.rc == 2 and "bitmap:NAME" in unnamed.err, unnamed.err
        s = backup(cli, uri, "--changed-since", "bitmap:mine")
    finally:
        server.stop()
    assert s["tracker"] == "bitmap" and "mine" in s["tracker_note"]
    assert s["parent"] == first["point_id"]
    assert s["blocks_examined"] == s["blocks_changed"] == len(touched(writes))
    restore_and_compare(cli, s["point_id"], img, tmp_path, fmt="qcow2")

    qemu_io(img, "write -P 0x33 3M 64k")
    server = export()  # this time without the bitmap
    try:
        s = backup(cli, uri, "--changed-since", "bitmap:mine")
        overlay = cli("backup", "--image", uri, "--changed-since", "overlay")
    finally:
        server.stop()
    assert s["tracker"] == "compare" and "no bitmap mine" in s["tracker_note"]
    assert s["blocks_changed"] == 1
    assert overlay.rc == 2 and "overlay" in overlay.err
    restore_and_compare(cli, s["point_id"], img, tmp_path, fmt="qcow2")
