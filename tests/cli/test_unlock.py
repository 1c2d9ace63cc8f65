"""unlock and the "locked" message: never steer a user into removing a live lock."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import assert_one_line_error
from tests.helpers.locks import dead_pid, write_lock


def test_locked_message_says_wait_not_remove_all(cli: CliRunner, initialized_repo: Path) -> None:
    repo = open_local_repository(initialized_repo)
    write_lock(repo, pid=os.getpid())
    repo.close()
    result = cli("prune")
    assert result.rc == 11
    line = assert_one_line_error(result, "repository is locked", "wait for it to finish")
    assert "--remove-all" not in line


def test_unlock_names_the_live_locks_it_keeps(cli: CliRunner, initialized_repo: Path) -> None:
    repo = open_local_repository(initialized_repo)
    write_lock(repo, pid=dead_pid())
    write_lock(repo, pid=os.getpid())
    repo.close()
    plain = cli("unlock")
    assert plain.rc == 0
    assert "1 locks removed" in plain.out and "kept live shared lock" in plain.out
    doc = cli("unlock", "--json").json()
    assert doc["removed"] == [] and len(doc["kept_live"]) == 1
    forced = cli("unlock", "--remove-all")
    assert forced.rc == 0
    assert "may still run" in forced.err
    assert list((initialized_repo / "locks").iterdir()) == []
