"""A source that fails to read, and a backup killed halfway: no point is
recorded, the repository stays consistent, and the next backup is exact."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.block_servers import Background, Nbdkit
from tests.helpers.cli import assert_one_line_error
from tests.helpers.images import (
    BS,
    MiB,
    backup,
    check_repository,
    list_points,
    needs,
    restore_and_compare,
    sparse_file,
    write_random,
)

needs_nbdkit = needs("nbdkit", "qemu-img")


@needs_nbdkit
def test_read_error_fails_the_backup_naming_the_offset(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, nbdkit: Callable[..., Nbdkit]
) -> None:
    disk = sparse_file(tmp_path / "disk.raw", 16 * MiB)
    write_random(disk, 5 * MiB, 6 * MiB, seed=1)
    trigger = tmp_path / "fail-reads"
    server = nbdkit(
        "--filter=error", "file", str(disk),
        "error-pread=EIO", "error-pread-rate=1", f"error-pread-file={trigger}",
    )  # fmt: skip
    first = backup(cli, server.uri, "--block-size", str(BS))
    write_random(disk, 7 * MiB, 64 * 1024, seed=2)
    trigger.touch()

    result = cli("backup", "--image", server.uri, "--json")

    assert result.rc == 1
    # The first block with data is the first read, and it fails.
    assert_one_line_error(result, "5242880", "EIO")
    assert [p["id"] for p in list_points(cli)] == [first["point_id"]]
    check_repository(cli, read_data=False)

    trigger.unlink()
    s = backup(cli, server.uri)
    assert s["parent"] == first["point_id"] and s["blocks_changed"] == 1
    restore_and_compare(cli, s["point_id"], disk, tmp_path)


@needs_nbdkit
def test_read_error_names_the_source_once(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, nbdkit: Callable[..., Nbdkit]
) -> None:
    disk = tmp_path / "disk.raw"
    write_random(disk, 0, 1 * MiB, seed=4)
    server = nbdkit("--filter=error", "file", str(disk), "error-pread=EIO", "error-pread-rate=1")
    result = cli("backup", "--image", server.uri)
    line = assert_one_line_error(result, "EIO")
    assert line.count(server.uri) == 1, line


@needs_nbdkit
def test_read_error_halfway_leaves_no_point_and_a_sound_repository(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, nbdkit: Callable[..., Nbdkit]
) -> None:
    """Reads below 8 MiB succeed (and their chunks are stored), the first one
    above fails: the backup stops there, and what it stored harms nothing."""
    disk = tmp_path / "disk.raw"
    write_random(disk, 0, 16 * MiB, seed=3)
    trigger = tmp_path / "fail-reads"
    trigger.touch()
    pread = (
        f'if [ -e {trigger} ] && [ "$4" -ge {8 * MiB} ]; then echo "EIO injected" >&2; exit 1; fi; '
        f'exec dd if={disk} skip="$4" count="$3" iflag=skip_bytes,count_bytes status=none'
    )
    server = nbdkit("eval", f"get_size=echo {16 * MiB}", f"pread={pread}")

    result = cli("backup", "--image", server.uri, "--block-size", str(MiB), "--json")

    assert result.rc == 1
    assert_one_line_error(result, str(8 * MiB))
    assert list_points(cli) == []
    check_repository(cli)

    trigger.unlink()
    s = backup(cli, server.uri, "--block-size", str(MiB))
    assert s["tracker"] == "full" and s["bytes_read"] == 16 * MiB
    restore_and_compare(cli, s["point_id"], disk, tmp_path)
    check_repository(cli)


def test_sigkill_halfway_leaves_no_point(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    background: Callable[..., Background],
) -> None:
    size = 256 * MiB
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        for _ in range(size // (16 * MiB)):
            f.write(os.urandom(16 * MiB))
    job = background("backup", "--image", str(disk), "--json")
    while True:
        status = job.next_json()
        assert status is not None and status["message_type"] == "status", status
        if status["bytes_done"] > 0:
            break
    assert status["bytes_done"] < size
    job.signal(signal.SIGKILL)
    job.wait()

    assert list_points(cli) == []
    check_repository(cli, read_data=False)

    s = backup(cli, disk)
    assert s["parent"] is None and s["bytes_read"] == size
    restore_and_compare(cli, s["point_id"], disk, tmp_path)
    check_repository(cli, read_data=False)
