"""The quiesce engine: hooks, freeze, the caller's snapshot, thaw, hooks.

Freezes run on a real loop-mounted ext4 (root only): a writer is held while
frozen and goes on after the thaw; a snapshot step that hangs, and a process
SIGKILLed while holding the freeze, leave the file system writable within
the timeout (+1 s). Command hooks (no root needed): failures and hangs make
the point crash-consistent with the reason, and the post hooks still run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.errors import ConfigError
from strongroom.protect.freeze import FsFreeze, GuestFreeze, mount_of
from strongroom.protect.hooks import MAX_OUTPUT, CommandHook, build_hook
from strongroom.protect.quiesce import Consistency, quiesce
from tests.protect.loopfs import ROOT, loop_ext4

APP, CRASH = Consistency.APPLICATION, Consistency.CRASH


class Writer(threading.Thread):
    """Writes and fsyncs one file; `done_at` is when that returned."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.done_at: float | None = None

    def run(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        self.done_at = time.monotonic()


@pytest.fixture(scope="module")
def ext4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with loop_ext4(tmp_path_factory.mktemp("quiesce-fs")) as mount:
        yield mount


# --- the freeze ----------------------------------------------------------------


@ROOT
def test_a_writer_waits_for_the_thaw(ext4: Path) -> None:
    with quiesce([], FsFreeze(str(ext4 / "sub" / "path")), 10) as q:
        writer = Writer(ext4 / "during")
        writer.start()
        time.sleep(0.4)
        assert writer.done_at is None, "the write went through a frozen file system"
        assert q.instant is not None and abs(q.instant - time.time()) < 5
        leaving = time.monotonic()
    writer.join(5)
    assert writer.done_at is not None and writer.done_at >= leaving
    assert (ext4 / "during").read_bytes() == b"x" * 4096
    result = q.result
    assert (result.consistency, result.reason, result.frozen) == (APP, None, True)
    assert result.held_seconds is not None and 0.4 <= result.held_seconds < 3
    assert result.summary()["writers_held_seconds"] == result.held_seconds


@ROOT
def test_a_hanging_snapshot_is_thawed_at_the_timeout(ext4: Path) -> None:
    with quiesce([], FsFreeze(str(ext4)), 1.0) as q:
        entered = time.monotonic()
        writer = Writer(ext4 / "hang")
        writer.start()
        time.sleep(2.2)  # the snapshot step hangs past the timeout
        assert writer.done_at is not None, "still frozen after the timeout"
    assert writer.done_at - entered <= 1.0 + 1.0
    assert q.result.consistency == CRASH
    assert "outlived its timeout (1 s)" in (q.result.reason or "")


_HOLDER = """
import sys, time
from strongroom.protect.freeze import FsFreeze
from strongroom.protect.quiesce import quiesce
with quiesce([], FsFreeze(sys.argv[1]), float(sys.argv[2])):
    print("frozen", flush=True)
    time.sleep(600)
"""


@ROOT
@pytest.mark.parametrize("timeout", [30.0, 1.0])
def test_sigkill_of_the_freezing_process_thaws(ext4: Path, timeout: float) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(ext4), str(timeout)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == b"frozen\n"
        writer = Writer(ext4 / f"killed-{timeout:g}")
        frozen_seen = time.monotonic()
        writer.start()
        time.sleep(0.3)
        assert writer.done_at is None
        killed_at = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        writer.join(timeout + 1.0)
        # The watchdog sees its pipe close and thaws at once: well within timeout + 1 s.
        assert writer.done_at is not None
        assert writer.done_at - frozen_seen <= timeout + 1.0
        assert writer.done_at - killed_at <= 1.0
    finally:
        holder.kill()
        holder.wait()


@ROOT
def test_a_killed_watchdog_is_replaced_by_fsfreeze_u(ext4: Path) -> None:
    with quiesce([], FsFreeze(str(ext4)), 10) as q:
        watchdog = q._freeze._proc if q._freeze else None
        assert watchdog is not None
        os.kill(watchdog.pid, signal.SIGKILL)
        writer = Writer(ext4 / "orphaned")
        writer.start()
        time.sleep(0.3)
        assert writer.done_at is None  # the freeze outlives its watchdog...
    writer.join(5)
    assert writer.done_at is not None  # ...until our own thaw
    assert q.result.consistency == CRASH
    assert "watchdog died; thawed by fsfreeze -u" in (q.result.reason or "")


@ROOT
def test_sigterm_to_the_watchdog_thaws_at_once(ext4: Path) -> None:
    """A service stop (systemd sends SIGTERM to every process of the unit)."""
    with quiesce([], FsFreeze(str(ext4)), 30) as q:
        watchdog = q._freeze._proc if q._freeze else None
        assert watchdog is not None
        writer = Writer(ext4 / "terminated")
        writer.start()
        time.sleep(0.2)
        assert writer.done_at is None
        signalled = time.monotonic()
        watchdog.send_signal(signal.SIGTERM)
        writer.join(5)
        assert writer.done_at is not None and writer.done_at - signalled < 1.0
    assert q.result.consistency == CRASH


@ROOT
def test_a_file_system_frozen_by_someone_else_is_left_to_them(ext4: Path) -> None:
    subprocess.run(["fsfreeze", "-f", str(ext4)], check=True)
    try:
        with quiesce([], FsFreeze(str(ext4)), 5) as q:
            pass
        assert q.result.consistency == CRASH
        assert "already frozen" in (q.result.reason or "")
        # ...and still frozen: we never thaw what we did not freeze.
        done = subprocess.run(["fsfreeze", "-u", str(ext4)], capture_output=True)
        assert done.returncode == 0
    finally:
        subprocess.run(["fsfreeze", "-u", str(ext4)], capture_output=True)


def test_the_root_file_system_is_never_frozen() -> None:
    if mount_of("/etc").mount_point != "/":
        pytest.skip("/etc is not on the root file system here")
    with quiesce([], FsFreeze("/etc"), 5) as q:
        pass
    assert (q.result.consistency, q.result.frozen) == (CRASH, False)
    assert "root file system: not frozen" in (q.result.reason or "")


def test_a_guest_without_agent_or_commands_is_not_frozen() -> None:
    with quiesce([], GuestFreeze("web"), 5) as q:
        pass
    assert q.result.consistency == CRASH
    assert "VM web: no guest agent or freeze command configured" in (q.result.reason or "")


def test_a_guest_freeze_command_runs_in_the_watchdog(tmp_path: Path) -> None:
    log = tmp_path / "log"
    target = GuestFreeze("web", None, f"echo freeze >> {log}", f"echo thaw >> {log}", 5)
    with quiesce([], target, 5) as q:
        assert log.read_text() == "freeze\n"
    assert log.read_text() == "freeze\nthaw\n"
    assert (q.result.consistency, q.result.reason) == (APP, None)


class FakeAgent:
    """A QEMU guest agent on a unix socket that logs (command, time) it was asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[tuple[str, float]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                for line in f:
                    request = json.loads(line.lstrip(b"\xff"))
                    command = request["execute"]
                    if command.startswith("guest-sync"):
                        answer = {"return": request["arguments"]["id"]}
                        f.write(b"\xff" + json.dumps(answer).encode() + b"\n")
                    else:
                        self.calls.append((command, time.monotonic()))
                        f.write(json.dumps({"return": 1}).encode() + b"\n")
                    f.flush()

    def commands(self) -> list[str]:
        return [c for c, _ in self.calls]


def test_a_guest_is_frozen_through_its_agent(tmp_path: Path) -> None:
    agent = FakeAgent(tmp_path / "qga.sock")
    with quiesce([], GuestFreeze("web", str(agent.path)), 5) as q:
        assert agent.commands() == ["guest-fsfreeze-freeze"]
    assert agent.commands() == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    assert (q.result.consistency, q.result.reason) == (APP, None)
    assert q.result.freeze_note == "froze the VM web"


_GUEST_HOLDER = """
import sys, time
from strongroom.protect.freeze import GuestFreeze
from strongroom.protect.quiesce import quiesce
with quiesce([], GuestFreeze("web", sys.argv[1]), 30):
    print("frozen", flush=True)
    time.sleep(600)
"""


def test_sigkill_while_a_guest_is_frozen_thaws_it(tmp_path: Path) -> None:
    agent = FakeAgent(tmp_path / "qga.sock")
    holder = subprocess.Popen(
        [sys.executable, "-c", _GUEST_HOLDER, str(agent.path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == b"frozen\n"
        killed_at = time.monotonic()
        holder.kill()
        holder.wait(5)
        deadline = time.monotonic() + 5
        while len(agent.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.commands() == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
        assert agent.calls[1][1] - killed_at < 1.0
    finally:
        holder.kill()
        holder.wait()


def test_mount_of_reads_escaped_mount_points(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "30 22 7:0 / /srv/my\\040data rw,relatime shared:5 - xfs /dev/loop0 rw\n"
        "31 22 7:1 / /srv/my rw - ext4 /dev/loop1 rw\n"
    )
    found = mount_of("/srv/my data/db/x", str(info))
    assert (found.mount_point, found.fstype) == ("/srv/my data", "xfs")
    assert mount_of("/srv/my/x", str(info)).mount_point == "/srv/my"
    assert mount_of("/srv/mydata", str(info)).mount_point == "/"


# --- command hooks ---------------------------------------------------------------


def test_hooks_and_nothing_else_are_application_consistent(tmp_path: Path) -> None:
    order = tmp_path / "order"
    hooks = [
        CommandHook(["sh", "-c", f"echo pre1 >> {order}; echo hello"], f"echo post1 >> {order}", 5),
        CommandHook(f"echo pre2 >> {order}", ["sh", "-c", f"echo post2 >> {order}"], 5),
    ]
    with quiesce(hooks, None, 5) as q:
        (tmp_path / "snap").write_text(order.read_text())
    assert (tmp_path / "snap").read_text() == "pre1\npre2\n"
    assert order.read_text() == "pre1\npre2\npost2\npost1\n"  # post in reverse order
    result = q.result
    assert (result.consistency, result.reason, result.held_seconds) == (APP, None, None)
    assert [(r.phase, r.ok) for r in result.hooks] == [("pre", True)] * 2 + [("post", True)] * 2
    assert result.hooks[0].output == "hello\n"


def test_a_failing_pre_hook_is_crash_consistent_and_post_still_runs(tmp_path: Path) -> None:
    marker = tmp_path / "post"
    hook = CommandHook(
        ["sh", "-c", "echo flushing; echo cannot flush >&2; exit 3"],
        f'echo "$STRONGROOM_HOOK $STRONGROOM_SNAPSHOT" > {marker}',
        5,
    )
    with quiesce([hook], None, 5) as q:
        pass
    assert marker.read_text() == "post ok\n"
    assert q.result.consistency == CRASH
    assert q.result.reason == "command sh -c 'echo flushing; echo cannot flush >&2; exit 3': " + (
        "pre: exited 3: cannot flush"
    )
    assert q.result.hooks[0].output == "flushing\ncannot flush\n"


def test_a_hanging_pre_hook_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile, marker = tmp_path / "pid", tmp_path / "post"
    hook = CommandHook(f"sleep 60 & echo $! > {pidfile}; wait", ["touch", str(marker)], 0.5)
    started = time.monotonic()
    with quiesce([hook], None, 5) as q:
        pass
    assert time.monotonic() - started < 4
    assert marker.exists()
    assert q.result.consistency == CRASH
    assert "pre: timed out after 0.5 s (killed)" in (q.result.reason or "")
    background = int(pidfile.read_text())
    time.sleep(0.1)
    stat = Path(f"/proc/{background}/stat")
    assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"


def test_a_failing_post_hook_is_crash_consistent(tmp_path: Path) -> None:
    with quiesce([CommandHook(None, ["false"], 5)], None, 5) as q:
        pass
    assert q.result.consistency == CRASH
    assert q.result.reason == "command false: post: exited 1"


def test_a_missing_program_is_a_reason_not_an_error(tmp_path: Path) -> None:
    with quiesce([CommandHook([str(tmp_path / "nope")], None, 5)], None, 5) as q:
        pass
    assert q.result.consistency == CRASH
    assert "pre: cannot run" in (q.result.reason or "")


def test_a_failing_snapshot_still_thaws_and_runs_post(tmp_path: Path) -> None:
    marker = tmp_path / "post"
    hook = CommandHook(["true"], f"echo $STRONGROOM_SNAPSHOT > {marker}", 5)
    with pytest.raises(RuntimeError, match="disk gone"), quiesce([hook], None, 5) as q:
        raise RuntimeError("disk gone")
    assert marker.read_text() == "failed\n"
    assert q.result.consistency == CRASH
    assert q.result.reason == "the snapshot failed: disk gone"


def test_nothing_to_quiesce_is_crash_consistent() -> None:
    with quiesce([], None, 5) as q:
        pass
    assert (q.result.consistency, q.result.reason) == (CRASH, "no hooks and no freeze configured")


def test_hook_output_is_bounded_and_secrets_stay_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRONGROOM_PASSWORD", "s3cret-value")
    chatty = CommandHook("head -c 1000000 /dev/zero | tr '\\0' x", None, 10)
    with quiesce([chatty], None, 5) as q:
        pass
    kept, _, note = q.result.hooks[0].output.partition("\n")
    assert kept == "x" * MAX_OUTPUT
    assert note == f"[{1000000 - MAX_OUTPUT} more bytes of output not kept]"
    envdump = CommandHook(["env"], None, 10)
    with quiesce([envdump], None, 5) as q:
        pass
    env = q.result.hooks[0].output
    assert "STRONGROOM_HOOK=pre" in env and "s3cret-value" not in env
    assert len(q.result.summary()["hooks"][0]["output"]) <= 2048


# --- the configuration's shapes ---------------------------------------------------


@dataclass
class Spec:
    type: str
    pre: str | list[str] | None = None
    post: str | list[str] | None = None
    dsn: str | None = None
    path: str | None = None
    timeout: float = 60.0


@pytest.mark.parametrize(
    "spec",
    [
        Spec("command", pre="sync"),
        Spec("command", post=["systemctl", "start", "x"], timeout=5),
        Spec("postgresql", dsn="host=/run/postgresql dbname=app"),
        Spec("sqlite", path="/srv/app.db"),
    ],
)
def test_the_three_hook_shapes_are_accepted(spec: Spec) -> None:
    hook = build_hook(spec)
    assert hook.name.startswith(spec.type)
    assert hook.holds_writers == (spec.type == "sqlite")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Spec("command"), "command hook: needs pre, post or both"),
        (Spec("command", pre="x", path="/a"), "command hook: takes pre, post and timeout only"),
        (Spec("command", pre=[]), "pre must be a non-empty list"),
        (Spec("command", pre="  "), "pre must be a non-empty command"),
        (Spec("postgresql"), "postgresql hook: needs dsn"),
        (Spec("postgresql", dsn="x", pre="y"), "pre and post are for command hooks"),
        (Spec("postgresql", dsn="host='unterminated password=pw"), "not a valid connection"),
        (Spec("sqlite", path="app.db"), "is not an absolute path"),
        (Spec("sqlite", path="/a", dsn="b"), "needs path (the database file) only"),
        (Spec("mysql", dsn="x"), "hook type 'mysql'"),
        (Spec("sqlite", path="/a", timeout=0), "timeout must be"),
    ],
)
def test_other_shapes_are_refused_in_one_line(spec: Spec, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        build_hook(spec)
    assert "\n" not in str(caught.value) and "pw" not in str(caught.value)
