"""Running the real `strongroom` program in a subprocess, and reading its output."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

from tests.helpers.cli_zygote import import_time_env

PASSWORD = "correct horse battery staple"
FAST_KDF = "1,8192,1"


def strongroom_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m strongroom`."""
    script = Path(sys.executable).with_name("strongroom")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "strongroom"]


NOBODY = 65534
_SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


@functools.cache
def nobody_command() -> list[str]:
    """A command line prefix running strongroom as user `nobody` (from root).

    `setpriv` if `nobody` can run this Python installation; else a launcher that
    imports what it needs as root and drops privileges before strongroom starts
    (an installation below /root is not readable by `nobody`).
    """
    direct = [*_SETPRIV, *strongroom_command()]
    if shutil.which("setpriv"):
        probe = subprocess.run([*direct, "--version"], capture_output=True, cwd="/", check=False)
        if probe.returncode == 0:
            return direct
    return [sys.executable, str(Path(__file__).with_name("as_nobody.py"))]


class CliResult(NamedTuple):
    rc: int
    out: Any  # str, or bytes with binary=True
    err: str

    def json(self) -> Any:
        """stdout as one JSON document."""
        return json.loads(self.out)

    def values(self) -> list[Any]:
        """Every JSON value on stdout, in order (lines or pretty-printed documents)."""
        decoder = json.JSONDecoder()
        text, pos, found = self.out, 0, []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                return found
            value, pos = decoder.raw_decode(text, pos)
            found.append(value)

    def document(self) -> Any:
        """The final JSON document (after any `status` lines, as `check --read-data`)."""
        *before, last = self.values()
        assert all(v.get("message_type") == "status" for v in before), before
        return last

    def lines(self) -> list[dict[str, Any]]:
        """stdout as JSON lines."""
        return json_lines(self.out)

    def summary(self) -> dict[str, Any]:
        """The `summary` line of a JSON-lines job (backup, restore)."""
        docs = [d for d in self.lines() if d.get("message_type") == "summary"]
        assert len(docs) == 1, f"expected one summary line in {self.out!r}"
        return docs[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class _Zygote:
    """This process's fork server (tests/helpers/cli_zygote.py), started on first use."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="strongroom-zygote-")
        self.path = os.path.join(self.folder, "socket")
        self.env = dict(os.environ)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.cli_zygote", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).parents[2],
            env=self.env,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready != b"ready\n":
            raise RuntimeError(f"the CLI fork server did not start (rc {self.proc.poll()})")
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the server exits on EOF
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a fork of the server sees what a fresh process with `env` would."""
        return import_time_env(env) == import_time_env(self.env)

    def run(
        self,
        args: list[str],
        env: dict[str, str],
        input: bytes | None,
        timeout: float,
        cwd: str,
        address_space: int | None,
    ) -> tuple[int, bytes, bytes]:
        fields = {"args": args, "env": env, "cwd": cwd, "argv0": strongroom_command()[0]}
        request = json.dumps({**fields, "address_space": address_space}).encode()
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(3)]
            if input is not None:
                files[0].write(input)
                files[0].seek(0)
            stdin = (
                files[0].fileno()
                if input is not None
                else stack.enter_context(open(os.devnull, "rb")).fileno()
            )
            conn = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            conn.connect(self.path)
            socket.send_fds(
                conn,
                [struct.pack("!Q", len(request))],
                [stdin, files[1].fileno(), files[2].fileno()],
            )
            conn.sendall(request)
            (pid,) = struct.unpack("!q", _recv_exactly(conn, 8))
            conn.settimeout(timeout)
            try:
                (rc,) = struct.unpack("!q", _recv_exactly(conn, 8))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)  # as subprocess.run does
                raise subprocess.TimeoutExpired(args, timeout) from None
            for f in files[1:]:
                f.seek(0)
            return rc, files[1].read(), files[2].read()
        raise AssertionError("unreachable")


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise RuntimeError("the CLI fork server's runner went away")
        data += more
    return data


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _cap(address_space: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def _forked(env: dict[str, str]) -> _Zygote | None:
    """The fork server, if it can serve a run with `env` (STRONGROOM_TEST_FORK_CLI=0:
    never; every run is then a fresh subprocess)."""
    global _zygote
    if os.environ.get("STRONGROOM_TEST_FORK_CLI", "1") == "0":
        return None
    with _zygote_lock:  # tests may run the program from several threads
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = _Zygote()
        zygote = _zygote
    return zygote if zygote.serves(env) else None


def run_cli(
    args: list[str] | tuple[str, ...],
    env: dict[str, str],
    *,
    input: bytes | None = None,
    binary: bool = False,
    timeout: float = 180,
    cwd: str | os.PathLike[str] | None = None,
    command: list[str] | None = None,
    address_space: int | None = None,
) -> CliResult:
    """Run strongroom (or `command`, e.g. `nobody_command()`) with `args`, its
    address space capped at `address_space` bytes if given (RLIMIT_AS).

    strongroom itself runs as a fork of the fork server (tests/helpers/cli_zygote.py:
    a process of its own, without paying the imports again) unless its environment
    changes an import-time setting; `command` always runs as a fresh subprocess.
    """
    zygote = _forked(env) if command is None else None
    if zygote is not None:
        where = os.fspath(cwd) if cwd is not None else os.getcwd()
        rc, stdout, stderr = zygote.run(list(args), env, input, timeout, where, address_space)
    else:
        proc = subprocess.run(
            [*(command or strongroom_command()), *args],
            env=env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd=cwd,
            preexec_fn=None if address_space is None else functools.partial(_cap, address_space),
        )
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    out = stdout if binary else stdout.decode("utf-8", "replace")
    return CliResult(rc, out, stderr.decode("utf-8", "replace"))


def assert_one_line_error(result: CliResult, *needles: str, only: bool = False) -> str:
    """The failure is reported as exactly one `strongroom: error:` line, no traceback
    (and, with `only`, nothing else on stderr)."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert "Traceback" not in result.err, result.err
    if only:
        assert len(lines) == 1, f"expected a one-line message, got: {result.err!r}"
    errors = [line for line in lines if line.startswith("strongroom: error:")]
    assert len(errors) == 1, f"expected one error line, got: {result.err!r}"
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]
