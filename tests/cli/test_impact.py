"""`--priority`, `--limit-read`, `--limit-upload`, `--limit-download` on the command line
(cli/impact.py, the global options of cli/main.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strongroom.config import load_settings
from strongroom.errors import ConfigError
from strongroom.priority import IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE, Priority, ioprio_get
from tests.conftest import CliRunner
from tests.helpers.cli import strongroom_command

MIB = 1 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")
def test_priority_low_and_limit_read_on_a_running_image_backup(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str], initialized_repo: Path
) -> None:
    """The backup process runs at nice 10 and I/O class best-effort 7 while it works
    (protect's test below sees `idle`), and reading 2 MiB at 2 MiB/s takes it about a
    second; the point holds the data."""
    image = tmp_path / "disk.raw"
    data = os.urandom(2 * MIB)
    image.write_bytes(data)
    cmd = [*strongroom_command(), "backup", "--image", str(image), "--json"]
    cmd += ["--priority", "low", "--limit-read", "2M"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[tuple[int, int, tuple[int, int] | None]] = set()
    while proc.poll() is None:
        try:
            nice = os.getpriority(os.PRIO_PROCESS, proc.pid)
            seen.add((os.sched_getscheduler(proc.pid), nice, ioprio_get(proc.pid)))
        except OSError:
            break
        time.sleep(0.02)
    _out, err = proc.communicate()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, err.decode()
    assert (os.SCHED_OTHER, 10, (IOPRIO_CLASS_BE, 7)) in seen
    assert elapsed >= 0.7  # 2 MiB at 2 MiB/s, less at most the bucket's 0.25 s burst
    restored = tmp_path / "restored.raw"
    done = cli("restore", "latest", "--target", str(restored))
    assert done.rc == 0, done.err
    assert restored.read_bytes() == data


def test_limit_upload_bounds_a_local_backup(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "random").write_bytes(os.urandom(3 * MIB))  # incompressible: ~3 MiB of packs
    t0 = time.monotonic()
    result = cli("backup", str(src), "--json", "--limit-upload", "4M")
    elapsed = time.monotonic() - t0
    assert result.rc == 0, result.err
    assert result.summary()["data_added_stored"] >= 3 * MIB
    assert elapsed >= 0.5  # 3 MiB at 4 MiB/s: 0.75 s, less the 0.25 s burst
    assert cli("check", "--read-data").rc == 0


def test_limit_download_bounds_a_restore_and_limit_upload_is_global(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """The global options hold any command: a backup given `--limit-upload` before the
    command, and a restore reading 3 MiB of packs at 4 MiB/s (0.75 s less the burst)."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(3 * MIB)
    (src / "random").write_bytes(data)
    t0 = time.monotonic()
    assert cli("--limit-upload", "4M", "backup", str(src)).rc == 0
    assert time.monotonic() - t0 >= 0.5
    t0 = time.monotonic()
    done = cli("--limit-download", "4M", "restore", "latest", "--target", str(tmp_path / "out"))
    elapsed = time.monotonic() - t0
    assert done.rc == 0, done.err
    assert elapsed >= 0.5
    assert (tmp_path / "out" / src.relative_to("/") / "random").read_bytes() == data
    bad = cli("--limit-download", "0", "snapshots")
    assert bad.rc == 2 and "--limit-download" in bad.err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--limit-read", "0", "--image", "x"], "--limit-read"),
        (["--limit-upload", "fast"], "--limit-upload"),
        (["--priority", "lowest"], "--priority"),
        (["--limit-read", "1M", "."], "--limit-read applies to --image and --vm"),
    ],
)
def test_bad_values_are_usage_errors(
    cli: CliRunner, initialized_repo: Path, args: list[str], words: str
) -> None:
    result = cli("backup", *args)
    assert result.rc == 2
    assert words in result.err
    assert len([line for line in result.err.splitlines() if words in line]) == 1


def test_settings_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('priority = "low"\nlimit_read = "50M"\nlimit_upload = "1G"\n')
    s = load_settings(env={}, path=config)
    assert (s.priority, s.limit_read, s.limit_upload) == (Priority.LOW, 50 * MIB, 1 << 30)
    s = load_settings(env={"STRONGROOM_PRIORITY": "normal", "STRONGROOM_LIMIT_UPLOAD": "2M"},
                      path=config)  # fmt: skip
    assert (s.priority, s.limit_upload) == (Priority.NORMAL, 2 * MIB)
    s = load_settings(env={"STRONGROOM_LIMIT_DOWNLOAD": "3M"}, path=config)
    assert (s.limit_download, s.source["limit_download"]) == (3 * MIB, "STRONGROOM_LIMIT_DOWNLOAD")
    with pytest.raises(ConfigError, match="limit_read"):
        load_settings(env={"STRONGROOM_LIMIT_READ": "0"}, path=tmp_path / "none.toml")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")
def test_protect_runs_idle_by_default_and_limits_its_chain(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """With no priority set, protect's process runs at SCHED_IDLE and I/O class idle;
    --limit-upload holds the VHD chain it writes (1 MiB of data at 1 MiB/s)."""
    from tests.protect.mirror import chain_files, flatten

    disk = tmp_path / "disk.raw"
    data = os.urandom(MIB)
    disk.write_bytes(data)
    env = {k: v for k, v in cli_env.items() if k != "STRONGROOM_PRIORITY"}
    cmd = [*strongroom_command(), "protect", str(disk), "--to", str(tmp_path / "dest")]
    cmd += ["--state", str(tmp_path / "state"), "--limit-upload", "1M"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[tuple[int, int | None]] = set()
    while proc.poll() is None:
        try:
            io = ioprio_get(proc.pid)
            seen.add((os.sched_getscheduler(proc.pid), io[0] if io else None))
        except OSError:
            break
        time.sleep(0.02)
    _out, err = proc.communicate()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, err.decode()
    assert (os.SCHED_IDLE, IOPRIO_CLASS_IDLE) in seen
    assert elapsed >= 0.7
    flat = tmp_path / "flat.raw"
    assert flatten(chain_files(tmp_path / "dest", "disk.raw"), flat) == len(data)
    assert flat.read_bytes() == data
