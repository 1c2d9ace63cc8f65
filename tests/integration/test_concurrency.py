"""Several processes on one repository: concurrent backups, prune against a running
backup, and stale locks left by killed processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import assert_one_line_error, strongroom_command
from tests.helpers.compare import walk_differences
from tests.helpers.locks import dead_pid, write_lock
from tests.helpers.tree import make_small_tree, random_bytes, write_file

MiB = 1024 * 1024


def make_tree(root: Path, seed: int, mib: int) -> None:
    make_small_tree(root, seed)
    for i in range(mib // 2):
        write_file(root / f"data/{i}.bin", random_bytes(2 * MiB, seed * 1000 + i))


def popen_backup(env: dict[str, str], src: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*strongroom_command(), "backup", str(src), "--json"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_lock(repo: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any((repo / "locks").glob("*")):
        assert proc.poll() is None, "the backup ended before it took its lock"
        assert time.monotonic() < deadline, "no lock appeared"
        time.sleep(0.002)


def test_two_backups_at_once(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str], initialized_repo: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, 1, 30)
    make_tree(b, 2, 30)
    write_file(b / "shared.bin", (a / "data/0.bin").read_bytes())  # both store this chunk

    procs = [popen_backup(cli_env, a), popen_backup(cli_env, b)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()

    points = cli("snapshots", "--json").json()
    assert sorted(p["paths"][0] for p in points) == [str(a), str(b)]
    for point in points:
        target = tmp_path / f"restore-{point['id'][:8]}"
        assert cli("restore", point["id"], "--target", str(target)).rc == 0
        src = Path(point["paths"][0])
        assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []
    check = cli("check", "--read-data")
    assert check.rc == 0, check.out + check.err
    # Both may have stored the shared chunk: prune keeps one copy, and all still restores.
    assert cli("prune").rc == 0
    assert cli("check", "--read-data").rc == 0
    for point in points:
        target = tmp_path / f"after-prune-{point['id'][:8]}"
        assert cli("restore", point["id"], "--target", str(target)).rc == 0
        src = Path(point["paths"][0])
        assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []


def test_prune_fails_while_a_backup_holds_its_lock(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str], initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 3, 20)
    proc = popen_backup(cli_env, src)
    try:
        wait_for_lock(initialized_repo, proc)
        os.kill(proc.pid, signal.SIGSTOP)  # hold the lock, deterministically
        pruned = cli("prune")
        assert pruned.rc == 11, pruned.err
        assert_one_line_error(pruned, "locked")
        forget = cli("forget", "--keep-last", "1", "--prune")
        assert forget.rc == 11
        # Shared users are not blocked by a shared lock.
        assert cli("check").rc == 0
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert cli("prune").rc == 0


def test_stale_lock_of_a_killed_backup_is_ignored_and_unlockable(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str], initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 4, 20)
    proc = popen_backup(cli_env, src)
    wait_for_lock(initialized_repo, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert len(list((initialized_repo / "locks").glob("*"))) == 1

    # The dead process's lock does not block an exclusive lock ...
    pruned = cli("prune")
    assert pruned.rc == 0, pruned.err
    # ... and `unlock` removes it and says whose it was.
    unlocked = cli("unlock", "--json")
    assert unlocked.rc == 0
    (removed,) = unlocked.json()["removed"]
    assert f"pid {proc.pid}" in removed and "shared lock" in removed
    assert list((initialized_repo / "locks").glob("*")) == []
    assert cli("backup", str(src)).rc == 0


def test_unlock_keeps_live_locks_unless_told(cli: CliRunner, initialized_repo: Path) -> None:
    repo = open_local_repository(initialized_repo)
    write_lock(repo, pid=dead_pid(), exclusive=True)
    write_lock(repo, pid=os.getpid())  # a live process: not stale
    locked = cli("backup", str(initialized_repo.parent / "home"))
    assert locked.rc == 0, "a stale exclusive lock must not block a backup"

    text = cli("unlock")
    assert text.rc == 0 and "1 locks removed" in text.out
    assert len(list((initialized_repo / "locks").glob("*"))) == 1
    assert cli("prune").rc == 11  # the live shared lock still blocks prune
    everything = cli("unlock", "--remove-all", "--json")
    assert len(json.loads(everything.out)["removed"]) == 1
    assert cli("prune").rc == 0


def test_check_beside_a_running_backup_finds_no_error(
    tmp_path: Path, cli_env: dict[str, str], initialized_repo: Path
) -> None:
    """check (shared lock) may run while a backup writes packs, index files and its
    point: it must never see a reference that does not resolve."""
    from strongroom.services.maintenance import check

    src = tmp_path / "src"
    make_tree(src, 5, 60)
    proc = popen_backup({**cli_env, "STRONGROOM_INDEX_FLUSH_SECONDS": "0.05"}, src)
    checks = 0
    try:
        while proc.poll() is None:
            repo = open_local_repository(initialized_repo)
            result = check(repo)
            repo.close()
            assert result.report.ok, result.report.errors
            checks += 1
    finally:
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert checks >= 3
    repo = open_local_repository(initialized_repo)
    assert check(repo, read_data=True).report.ok
    repo.close()
