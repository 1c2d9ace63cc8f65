"""Guest consistency hooks: quiesce a VM's file systems around its snapshot.

Two ways, as the VM is configured: the QEMU guest agent (`guest-fsfreeze-
freeze` / `guest-fsfreeze-thaw` over its socket), or a pair of user
commands (e.g. a database's own flush-and-lock script). Both are bounded by
a timeout. A freeze that fails or times out is not an error of the backup:
the snapshot is taken anyway and the point is marked crash-consistent, and
the reason is said. Thaw always runs once freeze was attempted, so a guest is
never left frozen by us (the agent also thaws by itself after its own timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from strongroom.errors import SourceError


class GuestAgentError(SourceError):
    """The guest agent did not answer, or answered with an error."""


class GuestAgent:
    """A minimal client of the QEMU guest agent's JSON protocol (one socket)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> GuestAgent:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as err:
            sock.close()
            raise GuestAgentError(f"guest agent {self.path}: {err.strerror or err}") from None
        self._sock = sock
        # The agent keeps no session: a sync with a fresh id discards any
        # stale reply a previous client left in the channel.
        token = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        self._send({"execute": "guest-sync", "arguments": {"id": token}})
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._receive().get("return") == token:
                return self
        raise GuestAgentError(f"guest agent {self.path}: no answer to guest-sync")

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, doc: dict[str, Any]) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(json.dumps(doc).encode() + b"\n")
        except OSError as err:
            raise GuestAgentError(f"guest agent {self.path}: {err.strerror or err}") from None

    def _receive(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise GuestAgentError(
                    f"guest agent {self.path}: no answer within {self.timeout:g} s"
                ) from None
            except OSError as err:
                raise GuestAgentError(f"guest agent {self.path}: {err.strerror or err}") from None
            if not data:
                raise GuestAgentError(f"guest agent {self.path}: connection closed")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        line = line.lstrip(b"\xff")  # the sync delimiter some agents send
        try:
            doc = json.loads(line)
        except ValueError:
            raise GuestAgentError(f"guest agent {self.path}: unreadable answer") from None
        return doc if isinstance(doc, dict) else {}

    def execute(self, command: str) -> Any:
        self._send({"execute": command})
        reply = self._receive()
        if "error" in reply:
            desc = reply["error"].get("desc", reply["error"])
            raise GuestAgentError(f"guest agent: {command}: {desc}")
        return reply.get("return")


@dataclass
class Quiesce:
    """How one VM is quiesced; `freeze()` then `thaw()` around the snapshot."""

    vm: str
    guest_agent: str | None = None
    freeze_command: str | None = None
    thaw_command: str | None = None
    timeout: float = 10.0

    @property
    def configured(self) -> bool:
        return bool(self.guest_agent or self.freeze_command)

    def freeze(self) -> tuple[bool, str]:
        """(frozen, what happened). Never raises for a guest's failure."""
        if self.guest_agent:
            try:
                with GuestAgent(self.guest_agent, self.timeout) as agent:
                    count = agent.execute("guest-fsfreeze-freeze")
                return True, f"guest agent froze {count} file system(s)"
            except GuestAgentError as err:
                return False, str(err)
        if self.freeze_command:
            return self._run(self.freeze_command, "freeze")
        return False, "no freeze configured"

    def thaw(self) -> str | None:
        """A warning if thawing failed."""
        if self.guest_agent:
            try:
                with GuestAgent(self.guest_agent, self.timeout) as agent:
                    agent.execute("guest-fsfreeze-thaw")
                return None
            except GuestAgentError as err:
                return f"thaw: {err}"
        if self.thaw_command:
            ok, note = self._run(self.thaw_command, "thaw")
            return None if ok else note
        return None

    def _run(self, command: str, what: str) -> tuple[bool, str]:
        """Run a hook in its own process group; on timeout the whole group is
        killed, so a late freeze can never land after the thaw."""
        env = {**os.environ, "STRONGROOM_VM": self.vm, "STRONGROOM_HOOK": what}
        try:
            proc = subprocess.Popen(
                command,
                shell=True,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            return False, f"{what} command: {err.strerror or err}"
        try:
            _, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return False, f"{what} command timed out after {self.timeout:g} s"
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return False, f"{what} command exited {proc.returncode}: {tail[0]}".rstrip(": ")
        return True, f"{what} command succeeded"
