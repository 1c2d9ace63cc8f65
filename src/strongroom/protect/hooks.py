"""Application hooks: what makes an application's files consistent on disk
for the instant of a snapshot, and lets it go on afterwards.

Three kinds, as a policy's `hooks = [...]` names them:

- `command`: a `pre` command before the freeze and a `post` command after the
  thaw. An argv list runs without a shell; a string runs with `sh -c`. Each
  is bounded by `timeout` (its whole process group is killed then), runs with
  `config.child_environment()` (never strongroom's secrets) plus
  STRONGROOM_HOOK=pre|post and, for `post`, STRONGROOM_SNAPSHOT=ok|failed;
  its output (stdout and stderr together) is captured, bounded, and logged.
- `sqlite` (sqlite_hook.py) and `postgresql` (postgresql_hook.py): built in.

Contract of a `Hook`: `pre()` and `post()` never raise for the
application's failure: they return a `HookReport` whose `ok` says whether
the step did its part. `post()` runs after every `pre()`, even a failed one
(a command's `post` is the user's "resume", and must run). A hook that holds
the application's writers between `pre` and `post` (`holds_writers`) also
offers `release()`: idempotent, callable from another thread, so the engine
can let writers go at the freeze timeout even while the main thread hangs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from strongroom.config import child_environment
from strongroom.errors import ConfigError

log = logging.getLogger("strongroom.protect.hooks")

DEFAULT_HOOK_TIMEOUT = 60.0
MAX_OUTPUT = 64 * 1024  # bytes of a command's output kept (the rest is counted)
HOOK_TYPES = ("command", "postgresql", "sqlite")


@dataclass(frozen=True)
class HookReport:
    """What one step of one hook did. `message` is one line; `output` a
    command's captured output (bounded); `details` what a point's record
    keeps (PostgreSQL's backup_label, for one)."""

    hook: str
    phase: str  # "pre" | "post"
    ok: bool
    seconds: float
    message: str
    output: str = ""
    details: dict[str, str] = field(default_factory=dict)

    @classmethod
    def timed(
        cls,
        hook: str,
        phase: str,
        ok: bool,
        started: float,
        message: str,
        details: dict[str, str] | None = None,
    ) -> HookReport:
        """A step's report, timed from `started` (time.monotonic()), its message
        prefixed by the phase."""
        seconds = time.monotonic() - started
        return cls(hook, phase, ok, seconds, f"{phase}: {message}", "", details or {})

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "hook": self.hook,
            "phase": self.phase,
            "ok": self.ok,
            "seconds": round(self.seconds, 6),
            "message": self.message,
        }
        if self.output:
            doc["output"] = self.output
        if self.details:
            doc["details"] = dict(self.details)
        return doc


class Hook(Protocol):
    """One application hook (see the module docstring for the contract)."""

    name: str
    holds_writers: bool

    def pre(self) -> HookReport: ...

    def post(self, snapshot_ok: bool) -> HookReport: ...

    def release(self) -> None: ...


class HookSpec(Protocol):
    """A validated `hooks = [...]` entry (protect/policy.py's `Hook` fits)."""

    @property
    def type(self) -> str: ...
    @property
    def pre(self) -> str | Sequence[str] | None: ...
    @property
    def post(self) -> str | Sequence[str] | None: ...
    @property
    def dsn(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...


def build_hook(spec: HookSpec) -> Hook:
    """The hook a policy entry names. ConfigError (one line) for a shape that
    is not one of `{type="command", pre=..., post=..., timeout=...}`,
    `{type="postgresql", dsn=...}`, `{type="sqlite", path=...}`."""
    kind = str(spec.type)
    timeout = float(spec.timeout)
    if not 0 < timeout <= 3600:
        raise ConfigError(f"{kind} hook: timeout must be from 0.1 s to 1 hour")
    if kind == "command":
        if spec.dsn is not None or spec.path is not None:
            raise ConfigError("command hook: takes pre, post and timeout only")
        pre, post = _command(spec.pre, "pre"), _command(spec.post, "post")
        if pre is None and post is None:
            raise ConfigError("command hook: needs pre, post or both")
        return CommandHook(pre, post, timeout)
    if spec.pre is not None or spec.post is not None:
        raise ConfigError(f"{kind} hook: pre and post are for command hooks")
    if kind == "postgresql":
        if not spec.dsn or spec.path is not None:
            raise ConfigError("postgresql hook: needs dsn (a connection string) only")
        from strongroom.protect.postgresql_hook import PostgresqlHook

        return PostgresqlHook(spec.dsn, timeout)
    if kind == "sqlite":
        if not spec.path or spec.dsn is not None:
            raise ConfigError("sqlite hook: needs path (the database file) only")
        if not os.path.isabs(spec.path):
            raise ConfigError(f"sqlite hook: {spec.path!r} is not an absolute path")
        from strongroom.protect.sqlite_hook import SqliteHook

        return SqliteHook(spec.path, timeout)
    raise ConfigError(f"hook type {kind!r}: use {', '.join(HOOK_TYPES)}")


def _command(value: str | Sequence[str] | None, what: str) -> str | list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip() or "\0" in value:
            raise ConfigError(f"command hook: {what} must be a non-empty command")
        return value
    argv = list(value)
    if not argv or not all(isinstance(a, str) and a and "\0" not in a for a in argv):
        raise ConfigError(f"command hook: {what} must be a non-empty list of non-empty strings")
    return argv


# --- command hooks -------------------------------------------------------------


class CommandHook:
    """`pre` before the freeze, `post` after the thaw (module docstring)."""

    holds_writers = False

    def __init__(
        self, pre: str | list[str] | None, post: str | list[str] | None, timeout: float
    ) -> None:
        self.pre_command = pre
        self.post_command = post
        self.timeout = timeout
        first = pre if pre is not None else post
        shown = first if isinstance(first, str) else shlex.join(first or [])
        self.name = f"command {_shorten(shown, 60)}"

    def pre(self) -> HookReport:
        return self._step("pre", self.pre_command, {})

    def post(self, snapshot_ok: bool) -> HookReport:
        extra = {"STRONGROOM_SNAPSHOT": "ok" if snapshot_ok else "failed"}
        return self._step("post", self.post_command, extra)

    def release(self) -> None:
        """A command holds nothing of ours between pre and post."""

    def _step(
        self, phase: str, command: str | list[str] | None, extra: dict[str, str]
    ) -> HookReport:
        if command is None:
            return HookReport(self.name, phase, True, 0.0, f"no {phase} command")
        started = time.monotonic()
        ok, message, output = run_command(
            command, self.timeout, {"STRONGROOM_HOOK": phase, **extra}
        )
        seconds = time.monotonic() - started
        report = HookReport(self.name, phase, ok, seconds, f"{phase}: {message}", output)
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "%s %s: %s (%.3f s)", self.name, phase, message, seconds)
        if output:
            log.log(level, "%s %s output:\n%s", self.name, phase, output)
        return report


def run_command(
    command: str | list[str], timeout: float, extra_env: dict[str, str]
) -> tuple[bool, str, str]:
    """Run a hook command: (ok, one-line message, captured output).

    Its own session, so a timeout kills the whole process group (a shell's
    children too); stdin is /dev/null; the output is read by a thread that
    keeps the first MAX_OUTPUT bytes and counts the rest, so a chatty or
    endless command never fills memory, and a grandchild that keeps the
    pipe open does not keep us waiting past the command's own exit."""
    argv = ["sh", "-c", command] if isinstance(command, str) else command
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_environment(extra_env),
            start_new_session=True,
        )
    except OSError as err:
        return False, f"cannot run {argv[0]}: {err.strerror or err}", ""
    assert proc.stdout is not None
    kept = bytearray()
    dropped = [0]
    fd = proc.stdout.fileno()
    reader = threading.Thread(target=_drain, args=(fd, kept, dropped), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        code = None
    except BaseException:
        _kill_group(proc)
        raise
    reader.join(timeout=1.0)
    if not reader.is_alive():  # else a grandchild holds the pipe: the thread ends with it
        proc.stdout.close()
    output = bytes(kept).decode(errors="replace")
    if dropped[0]:
        output += f"\n[{dropped[0]} more bytes of output not kept]"
    if code is None:
        return False, f"timed out after {timeout:g} s (killed)", output
    if code != 0:
        last = output.strip().splitlines()[-1:] or [""]
        how = f"killed by signal {-code}" if code < 0 else f"exited {code}"
        return False, f"{how}: {_shorten(last[0], 200)}".rstrip(": "), output
    return True, "succeeded", output


def _drain(fd: int, kept: bytearray, dropped: list[int]) -> None:
    with contextlib.suppress(OSError):
        while data := os.read(fd, 65536):
            room = max(0, MAX_OUTPUT - len(kept))
            kept += data[:room]
            dropped[0] += max(0, len(data) - room)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _shorten(text: str, most: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= most else line[: most - 1] + "…"
