"""Passwords typed on a terminal (issue #17): the first backup into a new default
repository asks twice (new, confirm), not three times; an empty password and two
different ones are refused with a reason, and nothing is created."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.helpers.cli import strongroom_command
from tests.helpers.tree import write_file


def _terminal_session(
    args: list[str], env: dict[str, str], answers: list[bytes]
) -> tuple[int, bytes]:
    """Run strongroom on a pseudo-terminal, answering each password prompt in
    turn; returns the exit code and everything it showed (fails on a prompt too many)."""
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [*strongroom_command(), *args],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    shown, pending = b"", list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the other end closed: the program ended
                    break
                if not chunk:
                    break
                shown += chunk
                prompts = shown.count(b"Enter ") + shown.count(b"Repeat it")
                answered = len(answers) - len(pending)
                if prompts > answered:
                    if not pending:
                        pytest.fail(f"one prompt too many: {shown!r}")
                    os.write(master, pending.pop(0) + b"\n")
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), shown
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@pytest.fixture
def terminal_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_PASSWORD")}
    env.pop("STRONGROOM_REPO", None)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env


def test_first_backup_asks_for_the_new_password_twice(
    tmp_path: Path, terminal_env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    write_file(src / "f", b"data")
    rc, shown = _terminal_session(
        ["backup", str(src)], terminal_env, [b"a long enough password"] * 2
    )
    assert rc == 0, shown
    assert shown.count(b"Enter ") == 1 and shown.count(b"Repeat it") == 1, shown
    assert b"a long enough password" not in shown  # never echoed
    assert (tmp_path / "data" / "strongroom" / "repository" / "config").is_file()
    # The next command asks once.
    rc, shown = _terminal_session(["snapshots"], terminal_env, [b"a long enough password"])
    assert rc == 0 and shown.count(b"Enter ") == 1, shown


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ([b""], b"an empty password is not allowed"),
        ([b"a long enough password", b"another long password"], b"differ"),
    ],
)
def test_empty_and_mismatched_passwords_are_refused_and_nothing_is_created(
    tmp_path: Path, terminal_env: dict[str, str], answers: list[bytes], reason: bytes
) -> None:
    rc, shown = _terminal_session(["init"], terminal_env, answers)
    assert rc == 2, shown
    assert b"strongroom: error:" in shown and reason in shown, shown
    assert not (tmp_path / "data" / "strongroom" / "repository" / "config").exists()
