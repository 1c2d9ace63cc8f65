"""`backup --jobs N`: worker processes die with a killed backup, unreadable files
are reported as without workers (exit 3), and N is checked."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.test_unprivileged import nobody_env, world_dir  # noqa: F401 (fixture)
from tests.conftest import CliRunner
from tests.helpers.cli import nobody_command, run_cli, strongroom_command
from tests.helpers.marks import needs_root
from tests.helpers.tree import compressible_bytes, random_bytes, write_file
from tests.pipeline.test_backup_workers import children_of, gone

MiB = 1024 * 1024
AT_ONCE = {"STRONGROOM_START_WORKERS_AFTER": "0"}


def wait_for(condition: object, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.002)
    return False


@pytest.mark.usefixtures("initialized_repo")
def test_killing_the_backup_kills_its_workers(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    for i in range(6):
        write_file(src / f"big/{i}.bin", random_bytes(MiB, i))
    for i in range(300):
        write_file(src / f"small/{i % 9}/{i}.txt", compressible_bytes(100 + 29 * i, i))
    proc = subprocess.Popen(
        [*strongroom_command(), "backup", str(src), "--jobs", "2"],
        env={**cli_env, **AT_ONCE},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: set[int] = set()

    def forks() -> set[int]:
        """Children running the backup's own program: forked workers (a helper
        program the backup runs, e.g. to read a file system's type, is not one)."""
        own = _cmdline(proc.pid)
        return {pid for pid in children_of(proc.pid) if _cmdline(pid) == own}

    def started() -> bool:
        workers.update(forks())
        return len(workers) >= 2 or proc.poll() is not None

    try:
        assert wait_for(started)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(workers) == 2, "the workers never started"
    assert wait_for(lambda: all(gone(pid) for pid in workers), 10), "a worker outlived its parent"
    checked = cli("check", "--read-data")
    assert checked.rc == 0, checked.out + checked.err
    again = cli("backup", str(src), "--jobs", "2", "--json", env=AT_ONCE)
    assert again.rc == 0, again.err
    assert again.summary()["files_new"] == 306


@pytest.mark.root
@needs_root
def test_unreadable_files_with_workers_give_exit_code_3(world_dir: Path) -> None:  # noqa: F811
    src = world_dir / "src"
    for i in range(40):
        write_file(src / f"small/{i}.txt", compressible_bytes(200 + i, i), 0o644)
    write_file(src / "big.bin", random_bytes(2 * MiB, 1), 0o644)
    write_file(src / "secret.txt", b"nobody may read this\n", 0o000)
    write_file(src / "secret.bin", random_bytes(MiB, 2), 0o000)
    for d in (src, src / "small"):
        os.chmod(d, 0o755)
    env = {**nobody_env(world_dir), **AT_ONCE}
    args = ["backup", str(src), "--jobs", "2", "--json"]
    result = run_cli(args, env, command=nobody_command(), cwd=world_dir)
    assert result.rc == 3, result.out + result.err
    summary = result.summary()
    assert summary["unreadable"] == 2 and summary["files_new"] == 43
    warnings = [d["message"] for d in result.lines() if d.get("message_type") == "warning"]
    assert sorted(w.split(":")[0] for w in warnings) == [
        str(src / "secret.bin"),
        str(src / "secret.txt"),
    ]


def test_jobs_must_be_at_least_one(tmp_path: Path, cli: CliRunner) -> None:
    result = cli("backup", str(tmp_path), "--jobs", "0")
    assert result.rc == 2 and "--jobs" in result.err


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
