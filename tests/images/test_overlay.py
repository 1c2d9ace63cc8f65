"""The overlay tracker: after a point of base.qcow2, writes go to an overlay
top.qcow2 (an external snapshot); the blocks allocated in the overlay are the
changes, as long as base.qcow2 is still what the point read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliRunner
from tests.helpers.images import (
    BS,
    QEMU,
    KiB,
    MiB,
    backup,
    qemu_io,
    restore_and_compare,
    run,
    to_raw,
    touched,
)

pytestmark = QEMU

TOP_WRITES = [
    ("write -P 0x22 {o} {n}", 1 * MiB, 64 * KiB),
    ("write -z {o} {n}", 2 * MiB, 64 * KiB),  # a zero cluster over base data
    ("write -P 0x23 {o} {n}", 20 * MiB + 4 * KiB, 128 * KiB),
]


def base_and_point(tmp_path: Path, cli: CliRunner) -> tuple[Path, dict[str, Any]]:
    base = tmp_path / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "32M")
    qemu_io(base, "write -P 0x11 0 8M", "write -P 0x12 16M 8M")
    return base, backup(cli, base, "--block-size", str(BS))


def overlay(tmp_path: Path, base: Path) -> Path:
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io(top, *(cmd.format(o=o, n=n) for cmd, o, n in TOP_WRITES))
    return top


def test_overlay_reads_only_its_allocated_blocks(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    base, first = base_and_point(tmp_path, cli)
    top = overlay(tmp_path, base)
    changed = touched((o, n) for _, o, n in TOP_WRITES)

    s = backup(
        cli, top, "--changed-since", "overlay", "--parent", first["point_id"], "--allow-backing"
    )

    assert s["tracker"] == "overlay" and s["tracker_note"] == ""
    assert s["parent"] == first["point_id"] and s["block_size"] == BS
    assert s["blocks_examined"] == len(changed)
    assert s["bytes_read"] <= len(changed) * BS
    assert s["blocks_changed"] == len(changed)
    restore_and_compare(cli, s["point_id"], to_raw(top, tmp_path / "top.raw"), tmp_path)
    restore_and_compare(cli, first["point_id"], to_raw(base, tmp_path / "base.raw"), tmp_path)


@pytest.mark.parametrize("tracker", ["overlay", "auto"])
def test_overlay_finds_the_point_of_its_backing_file(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, tracker: str
) -> None:
    """No --parent: the latest point of the backing file, as it is now, is the parent."""
    base, first = base_and_point(tmp_path, cli)
    top = overlay(tmp_path, base)
    s = backup(cli, top, "--changed-since", tracker, "--allow-backing")
    assert (s["tracker"], s["parent"]) == ("overlay", first["point_id"])
    assert s["block_size"] == BS
    restore_and_compare(cli, s["point_id"], to_raw(top, tmp_path / "top.raw"), tmp_path)


def test_changed_base_falls_back_to_comparison(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    base, first = base_and_point(tmp_path, cli)
    qemu_io(base, "write -P 0x66 5M 64k")  # after the point: the overlay no longer tells all
    top = overlay(tmp_path, base)

    s = backup(
        cli, top, "--changed-since", "overlay", "--parent", first["point_id"], "--allow-backing"
    )

    assert s["tracker"] == "compare"
    assert "backing file" in s["tracker_note"]
    assert s["blocks_changed"] == len(touched((o, n) for _, o, n in TOP_WRITES)) + 1
    restore_and_compare(cli, s["point_id"], to_raw(top, tmp_path / "top.raw"), tmp_path)


def test_overlay_on_an_image_without_backing_file_is_compared(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    base, _ = base_and_point(tmp_path, cli)
    qemu_io(base, "write -P 0x67 6M 64k")
    result = cli("backup", "--image", str(base), "--changed-since", "overlay", "--json")
    assert result.rc == 0, result.err
    s = result.summary()
    assert s["tracker"] == "compare" and "no backing file" in s["tracker_note"]
    assert s["blocks_changed"] == 1
    restore_and_compare(cli, s["point_id"], base, tmp_path, fmt="qcow2")
