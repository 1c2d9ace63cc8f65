"""Freezing what a snapshot reads: a mounted file system, or a VM's guest.

`FsFreeze(path)` freezes the file system holding `path` (what `fsfreeze -f`
does: the FIFREEZE ioctl on its mount point); `GuestFreeze` quiesces a VM
through its guest agent or its freeze/thaw commands (sources/guest.py, the
#5 VM path, reused as it is).

Contract of `Freeze`: `freeze()` never raises for the target's failure (it
answers (False, reason), and the point is then crash-consistent); `thaw()`
returns what the freeze held and never raises either. Whatever happens in
between — a hook or the snapshot step hangs, this process is killed — the
target is thawed within `timeout` seconds of the freeze: both steps are done
by a watchdog child process (protect/freeze_watchdog.py) started before the
freeze, which thaws at the deadline or as soon as this process goes away.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from strongroom.config import child_environment

# How long the watchdog may take to start (a Python interpreter) and answer.
_START_TIMEOUT = 20.0
# Slack over the timeout for the watchdog's answers (its own deadline rules).
_ANSWER_SLACK = 2.0
# A guest thaw retries for a long while (sources/guest.py: max(60, 4 x timeout)).
_GUEST_THAW_WAIT = 70.0


_WATCHDOG = (sys.executable, "-m", "strongroom.protect.freeze_watchdog")


@dataclass(frozen=True)
class MountInfo:
    mount_point: str
    fstype: str


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> MountInfo:
    """The mount that holds `path` (symlinks resolved): the longest mount point
    that is a prefix of it, the last one mounted when stacked."""
    real = os.path.realpath(path)
    best: MountInfo | None = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            head, sep, tail = line.partition(" - ")
            fields = head.split()
            if not sep or len(fields) < 5:
                continue
            point = _unescape(fields[4])
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) >= len(best.mount_point)):
                best = MountInfo(point, (tail.split() or ["?"])[0])
    if best is None:
        return MountInfo("/", "?")
    return best


@dataclass(frozen=True)
class FsFreeze:
    """Freeze the file system holding `path` (any path on it).

    The root file system is never frozen: this process, its logs and every
    other program on the machine write there (answered as a failure: the
    point is crash-consistent)."""

    path: str

    def describe(self) -> str:
        return f"file system of {self.path}"

    def spec(self) -> dict[str, Any] | str:
        """The watchdog's spec, or why this target cannot be frozen."""
        try:
            mount = mount_of(self.path)
        except OSError as err:
            return f"cannot find the mount of {self.path}: {err.strerror or err}"
        if mount.mount_point == "/":
            return f"{self.path} is on the root file system: not frozen"
        return {"kind": "fs", "mount": mount.mount_point}


@dataclass(frozen=True)
class GuestFreeze:
    """Quiesce a VM: its guest agent's socket, or freeze/thaw commands
    (the `[vm.NAME]` settings that services/vm_backup.py uses)."""

    vm: str
    guest_agent: str | None = None
    freeze_command: str | None = None
    thaw_command: str | None = None
    agent_timeout: float = 10.0

    def describe(self) -> str:
        return f"VM {self.vm}"

    def spec(self) -> dict[str, Any] | str:
        if not (self.guest_agent or self.freeze_command):
            return f"VM {self.vm}: no guest agent or freeze command configured"
        return {
            "kind": "guest",
            "vm": self.vm,
            "guest_agent": self.guest_agent,
            "freeze_command": self.freeze_command,
            "thaw_command": self.thaw_command,
            "timeout": self.agent_timeout,
        }


FreezeTarget = FsFreeze | GuestFreeze


@dataclass(frozen=True)
class Thawed:
    """What a freeze held: `held` seconds from the freeze call to the end of
    the thaw (as the watchdog measured them); `expired` when the deadline
    thawed before the snapshot was done; `warning` when the thaw went wrong
    (then the freeze may not have held until the snapshot)."""

    held: float
    expired: bool
    warning: str | None = None


class Freeze:
    """One freeze and its thaw through a watchdog child. Not reusable."""

    def __init__(self, target: FreezeTarget, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._frozen_asked = False
        self._spec: dict[str, Any] | None = None

    def freeze(self) -> tuple[bool, str]:
        """(frozen, what happened). Writers on the target are held from here."""
        spec = self.target.spec()
        if isinstance(spec, str):
            return False, spec
        self._spec = spec
        try:
            self._proc = subprocess.Popen(
                [*_WATCHDOG, json.dumps(spec), repr(self.timeout)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=child_environment({"PYTHONPATH": _search_path()}),
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not it
            )
        except OSError as err:
            return False, f"cannot start the freeze watchdog: {err.strerror or err}"
        answer = self._answer(_START_TIMEOUT)
        if answer != "ready":
            self._stop()
            return False, _why(answer, "the freeze watchdog did not start")
        if not self._send("freeze"):
            self._stop()
            return False, "the freeze watchdog ended before the freeze"
        self._frozen_asked = True
        answer = self._answer(self.timeout + _ANSWER_SLACK)
        if answer == "frozen":
            return True, f"froze the {self.target.describe()}"
        return False, _why(answer, f"the freeze of the {self.target.describe()} did not answer")

    def thaw(self) -> Thawed:
        """Thaw now (or learn that the deadline did). Never raises."""
        if self._proc is None or not self._frozen_asked:
            self._stop()
            return Thawed(0.0, False)
        started = time.monotonic()
        wait = _GUEST_THAW_WAIT if isinstance(self.target, GuestFreeze) else _ANSWER_SLACK
        answer = self._answer(wait) if self._send("thaw") else None
        parts = (answer or "").split(" ", 3)
        self._stop()
        if len(parts) >= 3 and parts[0] == "thawed":
            try:
                held, expired = float(parts[1]), parts[2] == "1"
            except ValueError:
                held, expired = time.monotonic() - started, True
            return Thawed(held, expired, parts[3] if len(parts) > 3 else None)
        # The watchdog is gone (killed?): thaw from here, as fsfreeze -u would.
        return Thawed(time.monotonic() - started, False, self._thaw_here())

    def _thaw_here(self) -> str:
        note = "the freeze watchdog died"
        if self._spec is None:
            return note
        if self._spec["kind"] == "fs":
            cmd = ["fsfreeze", "-u", str(self._spec["mount"])]
            try:
                done = subprocess.run(
                    cmd, capture_output=True, timeout=10, env=child_environment(), check=False
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                return f"{note}; fsfreeze -u: {err}"
            # "Invalid argument": not frozen any more (the watchdog thawed first).
            if done.returncode and b"Invalid argument" not in done.stderr:
                return f"{note}; fsfreeze -u: {done.stderr.decode(errors='replace').strip()}"
            return f"{note}; thawed by fsfreeze -u"
        from strongroom.sources.guest import Quiesce

        quiesce = Quiesce(
            str(self._spec["vm"]),
            self._spec["guest_agent"],
            self._spec["freeze_command"],
            self._spec["thaw_command"],
            float(self._spec["timeout"]),
        )
        quiesce._may_be_frozen = True  # we asked for a freeze: thaw unconditionally
        problem = quiesce.thaw()
        return f"{note}; {problem}" if problem else f"{note}; thawed the guest"

    # --- the pipe to the watchdog ---------------------------------------------

    def _send(self, line: str) -> bool:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            return False
        return True

    def _answer(self, wait: float) -> str | None:
        """The watchdog's next line, or None (EOF or no answer in `wait` s)."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + wait
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, 4096)
            if not data or len(self._buffer) > 4096:
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace").strip()

    def _stop(self) -> None:
        """Close the pipe (the watchdog thaws on EOF and ends) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        try:
            proc.wait(timeout=_GUEST_THAW_WAIT if self._frozen_asked else 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _search_path() -> str:
    """The watchdog imports this very package, wherever it was loaded from."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    search = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(search)


def _why(answer: str | None, default: str) -> str:
    if answer and answer.startswith(("failed ", "error ")):
        return answer.partition(" ")[2]
    return default
