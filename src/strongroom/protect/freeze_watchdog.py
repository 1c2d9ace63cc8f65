"""The freeze watchdog: a small child process that freezes, and ALWAYS thaws.

A frozen file system (or guest) blocks every writer on it until someone
thaws it; the kernel never does by itself. So the process that freezes is
not the one we trust to thaw: `protect/freeze.py` starts this program
*before* the freeze, and this program does both. It thaws

- when the parent says `thaw` (the snapshot is taken),
- at the deadline (`timeout` seconds after the freeze began), even if the
  parent is hung in a hook or in its snapshot step,
- at once when the parent dies (its end of the pipe closes: EOF on stdin),
  even by SIGKILL,
- on SIGTERM, SIGINT or SIGHUP (a service stop),

whichever comes first. It runs in its own session, so a Ctrl-C at the
terminal reaches the parent only (whose exit then closes the pipe).

The freeze itself runs in a thread: FIFREEZE syncs the file system and may
take long, and the deadline must be watched meanwhile.

Protocol (lines on stdin/stdout): the spec is argv[1] (JSON), the timeout
argv[2]. The child answers `ready` (or `error MESSAGE`) once it holds what it
needs to thaw (an open directory of the mount); the parent sends `freeze`,
the child answers `frozen` or `failed MESSAGE`; the parent sends `thaw`, the
child answers `thawed HELD EXPIRED [WARNING]` (HELD: seconds from the freeze
call to the end of the thaw; EXPIRED: 1 if the deadline thawed before the
parent asked) and exits.

Only the standard library at import time: it starts once per cycle, before
the freeze, and should start fast. The guest kind imports `sources/guest.py`
(the QEMU guest agent client and the freeze/thaw commands of a VM: reused).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# <linux/fs.h>: _IOWR('X', 119, int) and _IOWR('X', 120, int), what fsfreeze(8) calls.
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


class _Stop(Exception):
    """A signal asked us to end (after thawing)."""


def _syncfs(fd: int) -> None:
    """Flush the file system's dirty data before freezing, so FIFREEZE's own
    sync (done while writers are already held) has little left to write."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.syncfs(fd)


class _FsTarget:
    """A mounted file system, frozen with the FIFREEZE/FITHAW ioctls on a
    directory opened before the freeze (the thaw needs no path lookup, no exec)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.mount = str(spec["mount"])
        self.fd = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY)

    def freeze(self) -> tuple[bool, str]:
        _syncfs(self.fd)
        try:
            fcntl.ioctl(self.fd, FIFREEZE, 0)
        except OSError as err:
            if err.errno == errno.EBUSY:
                return False, f"{self.mount} is already frozen (by someone else)"
            return False, f"fsfreeze {self.mount}: {err.strerror}"
        return True, f"froze {self.mount}"

    def thaw(self) -> str | None:
        try:
            fcntl.ioctl(self.fd, FITHAW, 0)
        except OSError as err:
            if err.errno == errno.EINVAL:
                return f"{self.mount} was thawed by someone else while frozen"
            return f"thaw {self.mount}: {err.strerror}"
        return None


class _GuestTarget:
    """A VM, through its guest agent or freeze/thaw commands (sources/guest.py)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from strongroom.sources.guest import Quiesce

        self.quiesce = Quiesce(
            str(spec["vm"]),
            spec.get("guest_agent"),
            spec.get("freeze_command"),
            spec.get("thaw_command"),
            float(spec.get("timeout", 10.0)),
        )

    def freeze(self) -> tuple[bool, str]:
        return self.quiesce.freeze()

    def thaw(self) -> str | None:
        return self.quiesce.thaw()


class _Watchdog:
    def __init__(self, target: _FsTarget | _GuestTarget, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.lock = threading.Lock()
        self.freeze_started: float | None = None
        self.freeze_done = threading.Event()
        self.freeze_outcome: tuple[bool, str] = (False, "not frozen")
        self.thawed_at: float | None = None
        self.thaw_warning: str | None = None
        self.expired = False
        self._buffer = b""

    # --- freeze and thaw, each at most once ----------------------------------

    def _freeze_worker(self) -> None:
        try:
            outcome = self.target.freeze()
        except Exception as err:  # the child's answer must always come
            outcome = (False, f"freeze: {err}")
        with self.lock:
            self.freeze_outcome = outcome
        self.freeze_done.set()

    def thaw(self) -> None:
        """Thaw once. A freeze still running is waited for first (the ioctl
        holds the file system's lock): it cannot be interrupted, only followed."""
        with self.lock:
            if self.thawed_at is not None or self.freeze_started is None:
                return
        self.freeze_done.wait()
        with self.lock:
            if self.thawed_at is not None:
                return
            frozen, _ = self.freeze_outcome
            # A guest agent may be frozen even after a failed answer: its thaw
            # knows (sources/guest.py); a file system that refused is not.
            if frozen or isinstance(self.target, _GuestTarget):
                self.thaw_warning = self.target.thaw()
            self.thawed_at = time.monotonic()

    # --- the conversation ------------------------------------------------------

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(1, (line.replace("\n", " ") + "\n").encode())

    def _read_line(self, deadline: float | None) -> str | None:
        """The next line from the parent; None at EOF; '' at the deadline."""
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([0], [], [], wait)
            if not ready:
                return ""
            data = os.read(0, 4096)
            if not data:
                return None
            self._buffer += data
            if len(self._buffer) > 4096:
                return None  # not our parent talking: end as at EOF
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace").strip()

    def run(self) -> int:
        self._say("ready")
        if self._read_line(None) != "freeze":
            return 0  # the parent changed its mind, or died: nothing frozen
        with self.lock:
            self.freeze_started = time.monotonic()
        deadline = self.freeze_started + self.timeout
        threading.Thread(target=self._freeze_worker, daemon=True).start()
        if self.freeze_done.wait(self.timeout):
            frozen, note = self.freeze_outcome
            self._say("frozen" if frozen else f"failed {note}")
        while True:
            line = self._read_line(deadline if self.thawed_at is None else None)
            if line == "":  # the deadline: thaw, whatever the parent is doing
                self.expired = True
                self.thaw()
                continue
            self.thaw()  # "thaw", EOF (the parent died) or anything else
            if line is None:
                return 0
            held = (self.thawed_at or time.monotonic()) - self.freeze_started
            warning = self.thaw_warning or ""
            self._say(f"thawed {held:.6f} {int(self.expired)} {warning}".rstrip())
            return 0


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        spec = json.loads(args[0])
        timeout = float(args[1])
        make: Callable[[dict[str, Any]], _FsTarget | _GuestTarget]
        make = _FsTarget if spec.get("kind") == "fs" else _GuestTarget
        target = make(spec)
    except (OSError, ValueError, IndexError, KeyError, ImportError) as err:
        os.write(1, f"error {getattr(err, 'strerror', None) or err}\n".encode())
        return 1
    watchdog = _Watchdog(target, timeout)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        return watchdog.run()
    except _Stop:
        return 0
    finally:
        # No signal may interrupt the last thaw half-way.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        watchdog.thaw()


if __name__ == "__main__":
    sys.exit(main())
