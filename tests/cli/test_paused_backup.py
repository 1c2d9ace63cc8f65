"""A real backup process stopped with SIGSTOP right before it commits, past the
stale age (lowered through the environment), while a prune runs: it must not
commit a point whose data prune deleted, and must commit if nothing was lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.tree import random_bytes, write_file

LOCK_TIMES = {"STRONGROOM_LOCK_REFRESH_SECONDS": "1", "STRONGROOM_LOCK_STALE_SECONDS": "4"}

# Stops itself at the worst moment: every chunk deduplicated, the point not yet written.
_PAUSING_MAIN = """
import os, signal, sys
from strongroom.repository.repo import Repository
commit = Repository.save_point
def paused(self, doc):
    os.kill(os.getpid(), signal.SIGSTOP)
    return commit(self, doc)
Repository.save_point = paused
from strongroom.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def start_paused_backup(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_MAIN, "backup", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not stopped(proc.pid):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, **LOCK_TIMES}


def test_backup_stopped_past_the_stale_age_does_not_commit_over_a_prune(
    tmp_path: Path, cli: CliRunner, env: dict[str, str], initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    for i in range(4):
        write_file(src / f"f{i}", random_bytes(200_000, i))
    first = cli("backup", str(src), "--json", env=LOCK_TIMES)
    assert first.rc == 0, first.err
    assert cli("forget", first.summary()["point_id"], env=LOCK_TIMES).rc == 0

    proc = start_paused_backup(env, str(src), "--force")  # deduplicates against them
    time.sleep(float(LOCK_TIMES["STRONGROOM_LOCK_STALE_SECONDS"]) + 1)
    prune = cli("prune", "--json", env=LOCK_TIMES)  # our lock looks stale: allowed
    assert prune.rc == 0, prune.err
    assert prune.json()["packs_delete"] >= 1
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 1, err
    errors = [line for line in err.decode().splitlines() if line.startswith("strongroom: error:")]
    assert len(errors) == 1 and "nothing committed" in errors[0], err
    assert cli("snapshots", "--json").json() == []
    assert list((initialized_repo / "locks").iterdir()) == []
    assert cli("check").rc == 0


def test_backup_stopped_past_the_stale_age_commits_when_nothing_was_lost(
    tmp_path: Path, cli: CliRunner, env: dict[str, str], initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    write_file(src / "a", random_bytes(300_000, 9))
    proc = start_paused_backup(env, str(src), "--json")
    time.sleep(float(LOCK_TIMES["STRONGROOM_LOCK_STALE_SECONDS"]) + 1)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (point,) = cli("snapshots", "--json").json()
    target = tmp_path / "restore"
    assert cli("restore", point["id"], "--target", str(target)).rc == 0
    assert (target / str(src).lstrip("/") / "a").read_bytes() == (src / "a").read_bytes()
    assert list((initialized_repo / "locks").iterdir()) == []
