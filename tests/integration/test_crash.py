"""Crash safety: SIGKILL `strongroom backup` at random moments; the repository must
stay consistent, and the next backup must succeed, restore exactly, and reuse
what the killed one stored (docs/design.md §3)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CliRunner, init_local_repository
from tests.helpers.cli import strongroom_command
from tests.helpers.compare import walk_differences
from tests.helpers.tree import compressible_bytes, make_small_tree, random_bytes, write_file

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
# Each CI run kills at new random moments (the seed is printed on failure), so
# coverage grows run over run; STRONGROOM_CRASH_RUNS=50 for a longer search.
RUNS = int(os.environ.get("STRONGROOM_CRASH_RUNS", "8"))


def make_crash_tree(root: Path) -> int:
    """About 60 MiB: big and small files, mostly incompressible; returns the byte count."""
    total = 0
    for i in range(8):
        total += len(write_file(root / f"big/{i}.bin", random_bytes(5 * MiB, i)).read_bytes())
    for i in range(120):
        data = random_bytes(100_000 + 1000 * i, 1000 + i)
        total += len(write_file(root / f"small/{i % 10}/{i}.dat", data).read_bytes())
    total += len(write_file(root / "text.txt", compressible_bytes(2 * MiB)).read_bytes())
    return total


def start_backup(env: dict[str, str], src: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*strongroom_command(), "backup", str(src), "--json"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL; True if the process was still running (it did not finish first)."""
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def assert_check_passes(cli: CliRunner, repo: Path) -> None:
    result = cli("check", "--read-data", env={"STRONGROOM_REPO": str(repo)})
    assert result.rc == 0, f"check failed after a kill:\n{result.out}\n{result.err}"
    assert "Traceback" not in result.err


def backup_and_verify(cli: CliRunner, repo: Path, src: Path, target: Path) -> dict[str, object]:
    env = {"STRONGROOM_REPO": str(repo)}
    result = cli("backup", str(src), "--json", env=env)
    assert result.rc == 0, result.err
    summary = result.summary()
    restored = cli("restore", str(summary["point_id"]), "--target", str(target), env=env)
    assert restored.rc == 0, restored.err
    assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []
    return summary


def test_sigkill_at_random_moments(tmp_path: Path, cli: CliRunner, cli_env: dict[str, str]) -> None:
    src = tmp_path / "src"
    make_crash_tree(src)
    env = {**cli_env, "STRONGROOM_INDEX_FLUSH_SECONDS": "0.2"}

    # How long a whole backup takes here: the range of kill delays. Timed as a
    # fresh process (imports included), as the killed ones are started.
    init_local_repository(tmp_path / "timing")
    started = time.monotonic()
    timing = cli(
        "backup",
        str(src),
        env={"STRONGROOM_REPO": str(tmp_path / "timing")},
        command=strongroom_command(),
    )
    full_seconds = time.monotonic() - started
    assert timing.rc == 0, timing.err

    seed = random.randrange(1 << 32)
    rnd = random.Random(seed)
    outcomes = []
    for run in range(RUNS):
        repo = tmp_path / f"repo{run}"
        init_local_repository(repo)
        delay = rnd.uniform(0.05, full_seconds)
        proc = start_backup({**env, "STRONGROOM_REPO": str(repo)}, src)
        time.sleep(delay)
        killed = kill(proc)
        outcomes.append((round(delay, 3), killed))
        context = f"run {run}, delay {delay:.3f}s, seed {seed}"
        assert "Traceback" not in proc.stderr.read().decode(), context  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        assert_check_passes(cli, repo)
        backup_and_verify(cli, repo, src, tmp_path / f"restore{run}")
    assert any(killed for _, killed in outcomes), f"no backup was killed: {outcomes}"


def test_next_backup_reuses_what_a_killed_backup_indexed(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    total = make_crash_tree(src)
    for attempt in range(3):
        repo = tmp_path / f"repo{attempt}"
        init_local_repository(repo)
        proc = start_backup(
            {**cli_env, "STRONGROOM_REPO": str(repo), "STRONGROOM_INDEX_FLUSH_SECONDS": "0.01"}, src
        )
        # Kill late: once an index file names some packs.
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any((repo / "index").glob("*")):
                break
            time.sleep(0.005)
        kill(proc)
        proc.stderr.close()  # type: ignore[union-attr]
        if list((repo / "points").glob("*")):
            continue  # it finished before the kill: nothing was interrupted, try again
        assert_check_passes(cli, repo)
        summary = backup_and_verify(cli, repo, src, tmp_path / "restore")
        assert int(summary["data_added"]) < total * 0.9  # type: ignore[call-overload]
        assert summary["bytes_read"] == total  # everything was read again ...
        return  # ... but not everything stored again
    pytest.fail("the backup always finished before an index file appeared")


PRUNE_RUNS = 5


def test_sigkill_prune_at_random_moments(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str]
) -> None:
    """Prune is safe to interrupt and re-run (docs/design.md §5)."""
    src = tmp_path / "src"
    make_small_tree(src / "shared")
    for i in range(4):
        write_file(src / "shared" / f"{i}.bin", random_bytes(2 * MiB, 50 + i))
    template = tmp_path / "template"
    init_local_repository(template)
    env = {"STRONGROOM_REPO": str(template)}
    kept = []
    for gen in range(4):
        write_file(src / "changing.bin", random_bytes(6 * MiB, gen))
        result = cli("backup", str(src), "--json", env=env)
        assert result.rc == 0, result.err
        kept.append((result.summary()["point_id"], gen))
    assert cli("forget", "--keep-last", "2", env=env).rc == 0
    kept = kept[2:]

    timing = tmp_path / "timing"
    shutil.copytree(template, timing, symlinks=True)
    started = time.monotonic()
    # a fresh process (imports included), as the killed ones are started
    assert cli("prune", env={"STRONGROOM_REPO": str(timing)}, command=strongroom_command()).rc == 0
    full_seconds = time.monotonic() - started

    seed = random.randrange(1 << 32)
    rnd = random.Random(seed)
    for run in range(PRUNE_RUNS):
        repo = tmp_path / f"repo{run}"
        shutil.copytree(template, repo, symlinks=True)
        env = {"STRONGROOM_REPO": str(repo)}
        proc = subprocess.Popen(
            [*strongroom_command(), "prune"],
            env={**cli_env, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rnd.uniform(0.05, full_seconds))
        kill(proc)
        context = f"run {run}, seed {seed}"
        assert_check_passes(cli, repo)
        again = cli("prune", env=env)
        assert again.rc == 0, f"{context}: {again.err}"
        (older, older_gen), (newest, _) = kept
        target = tmp_path / f"restore{run}"
        assert cli("restore", newest, "--target", str(target), env=env).rc == 0, context
        restored = target / str(src).lstrip("/")
        assert walk_differences(src, restored, check_atime=False) == [], context
        dumped = cli("dump", older, str(src / "changing.bin"), env=env, binary=True)
        assert dumped.out == random_bytes(6 * MiB, older_gen), context
    assert_check_passes(cli, repo)


def test_interrupted_backup_cleans_up_and_keeps_its_data(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str]
) -> None:
    """Ctrl-C: exit 130, one line, the lock released, stored packs indexed for reuse."""
    src = tmp_path / "src"
    total = make_crash_tree(src)
    repo = tmp_path / "repo"
    init_local_repository(repo)
    proc = subprocess.Popen(
        [*strongroom_command(), "backup", str(src)],
        env={**cli_env, "STRONGROOM_REPO": str(repo)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list((repo / "data").glob("*/*")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the backup finished before a pack was written"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the backup finished before the signal arrived")
    assert proc.returncode == 130
    assert err.decode().strip().splitlines() == ["strongroom: error: interrupted"]
    assert list((repo / "locks").glob("*")) == []
    assert not list((repo / "points").glob("*"))
    assert_check_passes(cli, repo)
    summary = backup_and_verify(cli, repo, src, tmp_path / "restore")
    assert int(summary["data_added"]) < total  # type: ignore[call-overload]
