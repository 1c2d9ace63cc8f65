"""Guest consistency hooks: quiesce a VM's file systems around its snapshot.

Two ways, as the VM is configured: the QEMU guest agent (`guest-fsfreeze-
freeze` / `guest-fsfreeze-thaw` over its socket), or a pair of user
commands (e.g. a database's own flush-and-lock script). Both are bounded by
a timeout. A freeze that fails or times out is not an error of the backup:
the snapshot is taken anyway and the point is marked crash-consistent, and
the reason is said. Thaw always runs once freeze was attempted, and a thaw
through the agent is retried for a long while: the Linux agent never thaws by
itself, and a freeze that outlived our timeout may still complete in the guest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from strongroom.config import child_environment
from strongroom.errors import SourceError
from strongroom.sources.json_lines import JsonLineSocket, connect_unix


class GuestAgentError(SourceError):
    """The guest agent did not answer, or answered with an error."""


class GuestAgentRefused(GuestAgentError):
    """The agent answered with an error (the command failed or is disabled)."""


class _Unreadable(GuestAgentError):
    """A line that is not JSON (stale output of an earlier client)."""


class GuestAgent:
    """A minimal client of the QEMU guest agent's JSON protocol (one socket,
    lines as `sources/json_lines.py` reads them: bounded, the guest is not trusted)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._lines: JsonLineSocket | None = None

    def __enter__(self) -> GuestAgent:
        label = f"guest agent {self.path}"
        try:
            sock = connect_unix(self.path, self.timeout)
        except OSError as err:
            raise GuestAgentError(f"{label}: {err.strerror or err}") from None
        self._lines = lines = JsonLineSocket(sock, label, GuestAgentError)
        # The agent keeps no session: 0xFF makes it drop any half-read input a
        # previous client left, and a delimited sync with a fresh id tells its
        # answer apart from stale output (skipped, even when unreadable).
        token = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        lines.send_raw(b"\xff")
        lines.send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                if self._receive(deadline).get("return") == token:
                    return self
            except _Unreadable:
                continue
        raise GuestAgentError(f"{label}: no answer to guest-sync")

    def __exit__(self, *exc: object) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None

    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self._lines is not None
        # The last \xff is guest-sync-delimited's marker: what precedes it is stale.
        line = self._lines.read_line(deadline).rpartition(b"\xff")[2]
        try:
            doc = json.loads(line)
        except ValueError:
            raise _Unreadable(f"guest agent {self.path}: unreadable answer") from None
        return doc if isinstance(doc, dict) else {}

    def execute(self, command: str) -> Any:
        assert self._lines is not None
        self._lines.send({"execute": command})
        reply = self._receive(time.monotonic() + self.timeout)  # one deadline per command
        if "error" in reply:
            error = reply["error"]
            desc = error.get("desc", error) if isinstance(error, dict) else error
            raise GuestAgentRefused(f"guest agent: {command}: {desc}")
        return reply.get("return")


@dataclass
class Quiesce:
    """How one VM is quiesced; `freeze()` then `thaw()` around the snapshot."""

    vm: str
    guest_agent: str | None = None
    freeze_command: str | None = None
    thaw_command: str | None = None
    timeout: float = 10.0
    # Whether the guest may be frozen now: after a freeze that succeeded, or
    # one whose answer never came (it may still complete), not after a refusal.
    _may_be_frozen: bool = field(default=False, init=False, repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.guest_agent or self.freeze_command)

    def freeze(self) -> tuple[bool, str]:
        """(frozen, what happened). Never raises for a guest's failure. Frozen
        means at least one file system: a guest with none froze nothing."""
        if self.guest_agent:
            try:
                agent = GuestAgent(self.guest_agent, self.timeout).__enter__()
            except GuestAgentError as err:
                return False, str(err)  # the freeze was never sent
            try:
                self._may_be_frozen = True  # sent: from here on, thaw whatever happens
                count = agent.execute("guest-fsfreeze-freeze")
            except GuestAgentRefused as err:
                self._may_be_frozen = False  # the agent thaws what it froze on failure
                return False, str(err)
            except GuestAgentError as err:
                return False, str(err)
            finally:
                agent.__exit__()
            if not isinstance(count, int) or count <= 0:
                return False, f"the guest agent froze {count} file systems"
            return True, f"guest agent froze {count} file system(s)"
        if self.freeze_command:
            return self._run(self.freeze_command, "freeze")
        return False, "no freeze configured"

    def thaw(self) -> str | None:
        """A warning if thawing failed (then the freeze may not have held)."""
        if self.guest_agent:
            if not self._may_be_frozen:
                return None
            # An agent still busy with a slow freeze answers nothing meanwhile;
            # keep asking until it can thaw, for a long but bounded time.
            deadline = time.monotonic() + max(60.0, 4 * self.timeout)
            while True:
                try:
                    with GuestAgent(self.guest_agent, self.timeout) as agent:
                        agent.execute("guest-fsfreeze-thaw")
                    self._may_be_frozen = False
                    return None
                except GuestAgentRefused as err:
                    return f"thaw: {err}"
                except GuestAgentError as err:
                    if time.monotonic() > deadline:
                        return f"thaw: {err}"
                    time.sleep(0.5)
        if self.thaw_command:
            ok, note = self._run(self.thaw_command, "thaw")
            return None if ok else note
        return None

    def _run(self, command: str, what: str) -> tuple[bool, str]:
        """Run a hook in its own process group; on timeout the whole group is
        killed, so a late freeze can never land after the thaw."""
        try:
            proc = subprocess.Popen(
                command,
                shell=True,
                # A user's script, perhaps run over ssh: never with our secrets.
                env=child_environment({"STRONGROOM_VM": self.vm, "STRONGROOM_HOOK": what}),
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
