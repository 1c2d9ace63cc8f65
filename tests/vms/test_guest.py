"""Guest consistency hooks around the instant: a point is application-consistent
only when the freeze succeeded; a freeze that fails, times out or finds no guest
agent still gives a (crash-consistent) point, says why, and thaw still runs."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.block_servers import wait_for_sockets
from tests.vms.conftest import QEMU, VM, Cluster

pytestmark = QEMU


def hook(log: Path) -> str:
    """A hook command that logs which hook ran, for which VM, and when."""
    return f'echo "$STRONGROOM_HOOK $STRONGROOM_VM $(date +%s.%N)" >> {log}'


def hook_log(log: Path) -> list[tuple[str, str, float]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        what, vm, when = line.split()
        out.append((what, vm, float(when)))
    return out


@pytest.mark.parametrize(
    ("freeze", "timeout", "consistency", "warning"),
    [
        ("{hook}", 10.0, "application-consistent", None),
        ("{hook}; echo cannot lock the tables >&2; exit 1", 10.0, "crash-consistent",
         "freeze command exited 1: cannot lock the tables"),
        ("{hook}; sleep 5", 0.5, "crash-consistent", "freeze command timed out after 0.5 s"),
    ],
    ids=["succeeds", "fails", "times-out"],
)  # fmt: skip
def test_freeze_command(
    cluster: Cluster,
    tmp_path: Path,
    freeze: str,
    timeout: float,
    consistency: str,
    warning: str | None,
) -> None:
    log = tmp_path / "hooks.log"
    cluster.configure(
        freeze_command=freeze.format(hook=hook(log)),
        thaw_command=hook(log),
        freeze_timeout=timeout,
    )
    t0 = time.monotonic()
    result = cluster.backup()
    assert time.monotonic() - t0 < 4, "the freeze hook is bounded by freeze_timeout"
    assert result.consistency == consistency == result.point.consistency
    assert result.point.summary["quiesce"] == result.quiesce_note
    if warning is None:
        assert result.warnings == []
        assert result.quiesce_note == "freeze command succeeded"
    else:
        (said,) = result.warnings
        assert warning in said and "crash-consistent" in said, said
    # Freeze before the instant, thaw after it, whatever the freeze did.
    instant = result.point.summary["instant"]
    (freeze_, vm1, t_freeze), (thaw, vm2, t_thaw) = hook_log(log)
    assert (freeze_, thaw, vm1, vm2) == ("freeze", "thaw", VM, VM)
    assert t_freeze < instant <= t_thaw
    assert cluster.daemon.leftovers() == []


# Regression: a timed-out hook's children once outlived it and froze after the thaw.
def test_a_timed_out_freeze_hook_does_nothing_after_thaw(cluster: Cluster, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    # A hook whose freezing tool is slow (an ssh to the guest, say): the tool is
    # a child of the hook's shell.
    slow_tool = f"sh -c 'sleep 1; {hook(log)}'"
    cluster.configure(
        freeze_command=f"{slow_tool}; true", thaw_command=hook(log), freeze_timeout=0.3
    )
    result = cluster.backup()
    assert result.consistency == "crash-consistent"
    time.sleep(1.5)
    assert [what for what, _, _ in hook_log(log)] == ["thaw"], "froze after the thaw"


# --- the guest agent ---------------------------------------------------------


def check_agent_failure(cluster: Cluster, agent: Path, *needles: str) -> None:
    cluster.configure(guest_agent=str(agent), freeze_timeout=0.5)
    t0 = time.monotonic()
    result = cluster.backup()
    assert time.monotonic() - t0 < 4
    assert result.consistency == "crash-consistent" == result.point.consistency
    for needle in needles:
        assert needle in result.quiesce_note, result.quiesce_note
    assert any(
        w.startswith("guest not quiesced") and "crash-consistent" in w for w in result.warnings
    ), result.warnings
    # The freeze never reached a guest (no agent, no answer to the sync) or the
    # agent refused it (and thawed what it had frozen): nothing is left to thaw.
    assert not any(w.startswith("thaw: ") for w in result.warnings), result.warnings
    assert cluster.daemon.leftovers() == []


def test_a_guest_agent_socket_nobody_serves(cluster: Cluster, run_dir: Path) -> None:
    agent = run_dir / "qga.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(agent))  # the agent went away: its socket file stays
    stale.close()
    check_agent_failure(cluster, agent, str(agent), "Connection refused")


def test_a_guest_agent_that_never_answers(cluster: Cluster, run_dir: Path) -> None:
    agent = run_dir / "qga.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hung:
        hung.bind(str(agent))
        hung.listen(4)  # connections queue, nobody reads them
        check_agent_failure(cluster, agent, str(agent), "no answer within 0.5 s")


# Everything that could change this machine stays refused: the agent runs on
# the host itself, not in a guest.
BLOCKED = ",".join(
    [
        "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw",
        "guest-fstrim", "guest-shutdown", "guest-suspend-disk", "guest-suspend-ram",
        "guest-suspend-hybrid", "guest-set-time", "guest-set-vcpus", "guest-set-user-password",
        "guest-set-memory-blocks", "guest-exec", "guest-file-open", "guest-file-write",
        "guest-ssh-add-authorized-keys", "guest-ssh-remove-authorized-keys",
    ]
)  # fmt: skip


@pytest.fixture
def qemu_ga(run_dir: Path) -> Iterator[Path]:
    """A real qemu-ga on a unix socket, with freezing (and all else that writes) blocked."""
    if shutil.which("qemu-ga") is None:
        pytest.skip("needs qemu-ga (Debian package qemu-guest-agent)")
    path = run_dir / "qga.sock"
    state = run_dir / "qga-state"
    state.mkdir()
    log = run_dir / "qga.log"
    args = ["qemu-ga", "-m", "unix-listen", "-p", str(path), "-b", BLOCKED]
    args += ["-t", str(state), "-f", str(state / "qga.pid"), "-l", str(log)]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_sockets(proc, [path], log)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_real_guest_agent_that_refuses_to_freeze(cluster: Cluster, qemu_ga: Path) -> None:
    check_agent_failure(cluster, qemu_ga, "guest-fsfreeze-freeze", "disabled")


def test_a_thaw_that_fails_makes_the_point_crash_consistent(
    cluster: Cluster, run_dir: Path
) -> None:
    """Windows' VSS provider stops holding writes after 10 s and says so at thaw."""
    path = run_dir / "fake-qga.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                for line in f:
                    request = json.loads(line.lstrip(b"\xff"))
                    command = request["execute"]
                    if command.startswith("guest-sync"):
                        reply = (
                            b"\xff" + json.dumps({"return": request["arguments"]["id"]}).encode()
                        )
                    elif command == "guest-fsfreeze-freeze":
                        reply = json.dumps({"return": 2}).encode()
                    else:
                        error = {"class": "GenericError", "desc": "couldn't hold writes"}
                        reply = json.dumps({"error": error}).encode()
                    f.write(reply + b"\n")
                    f.flush()

    threading.Thread(target=serve, daemon=True).start()
    try:
        cluster.configure(guest_agent=str(path))
        result = cluster.backup()
    finally:
        server.close()
    assert result.consistency == "crash-consistent" == result.point.consistency
    assert any("couldn't hold writes" in w for w in result.warnings), result.warnings
