"""A fork server for `strongroom` runs in tests: the program's imports paid once.

Why: a `strongroom` process spends ~0.3 s importing (click, rich, numpy, httpx,
the services) before it does anything, and the suite runs the program thousands
of times (CI time, issue #15). This server imports every command module once,
then forks one process per run. Each run is still a process of its own, as with
`subprocess.run`: its own environment, working directory, stdin/stdout/stderr
(files passed over the socket), exit code (negative for a signal), `atexit`
and thread shutdown, and `main()` entered exactly as the console script does.

What a fork cannot give is an import under the run's own environment: values
read at import time are the server's. `IMPORT_TIME_ENV` names them (a test,
tests/test_cli_fork_server.py, finds every module-level read of a STRONGROOM_
variable in src and checks it is named there); a run whose environment differs
from the server's in one of them, in a PYTHON* variable, in the locale (LANG,
LC_*: the encoding of stdio) or in what the loader and libc read at exec (LD_*,
MALLOC_*, GLIBC_TUNABLES) runs as a real subprocess instead (tests/helpers/
cli.py decides). TZ is re-read (time.tzset) in every run.

Protocol (one connection per run): the client sends an 8-byte length with three
descriptors (stdin, stdout, stderr), then that many bytes of JSON {"args", "env",
"cwd", "argv0", "address_space"}. A runner forked for the connection forks the
program, sends its pid (8 bytes), waits for it and sends its return code (8
bytes, signed). The server exits when its stdin (a pipe from the client) closes.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import selectors
import socket
import struct
import sys
import threading
import time
from typing import Any

IMPORT_TIME_ENV = frozenset(
    {
        "STRONGROOM_INDEX_FLUSH_SECONDS",
        "STRONGROOM_LOCK_REFRESH_SECONDS",
        "STRONGROOM_LOCK_STALE_SECONDS",
    }
)
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!q")


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    """The part of `env` a forked run would see as the server's, not its own."""
    return {
        k: v
        for k, v in env.items()
        if k in IMPORT_TIME_ENV
        or k.startswith(("PYTHON", "LC_", "LD_", "MALLOC_"))
        or k in ("LANG", "LANGUAGE", "GLIBC_TUNABLES")
    }


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise EOFError("client went away")
        data += more
    return data


def _preload() -> None:
    from strongroom.cli import main

    for target in main.COMMANDS.values():
        try:
            importlib.import_module(f"strongroom.cli.commands.{target.split(':')[0]}")
        except ImportError:
            pass  # an optional dependency missing: each run imports it (and fails) itself


def _run_program(
    listener: socket.socket, conn: socket.socket, fds: list[int], request: dict[str, Any]
) -> None:
    """In the forked program: become the run, then leave by SystemExit (so the
    interpreter's normal shutdown runs: atexit, threads, stdio flush)."""
    listener.close()
    conn.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)  # inheritable, as a subprocess's stdio
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    time.tzset()  # TZ as the run's environment has it (the time module read the server's)
    if request.get("address_space") is not None:  # as a subprocess's preexec_fn would
        cap = request["address_space"]
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.argv = [request["argv0"], *request["args"]]
    from strongroom.cli.main import main

    sys.exit(main())


Job = tuple[socket.socket, socket.socket, list[int], dict[str, Any]]


def _runner(listener: socket.socket, conn: socket.socket) -> Job | None:
    """In the runner forked per connection: start the program, report pid and
    status. Returns the job in the forked program (which runs it outside any
    try/finally of the server), None in the runner."""
    header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    (size,) = _HEADER.unpack(header)
    request = json.loads(_recv_exactly(conn, size))
    pid = os.fork()
    if pid == 0:
        return listener, conn, fds, request
    for fd in fds:
        os.close(fd)
    conn.sendall(_STATUS.pack(pid))
    _, status = os.waitpid(pid, 0)
    conn.sendall(_STATUS.pack(os.waitstatus_to_exitcode(status)))
    return None


def serve(path: str) -> Job | None:
    """Serve until the client goes; returns a job only in a forked program."""
    _preload()
    if threading.active_count() != 1:
        raise RuntimeError("an import started a thread: forking would lose it")
    # The preloaded objects never change: keep the collector (and so the
    # interpreter's shutdown in every run) off them, and their pages shared.
    # Without this a run's exit takes ~1 s of copy-on-write faults.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is not listener:
                return None  # the client closed our stdin: it is gone
            conn, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                selector.close()
                job: Job | None = None
                try:
                    job = _runner(listener, conn)
                except BaseException:
                    os._exit(1)
                if job is not None:
                    return job  # the program
                os._exit(0)
            conn.close()
        while True:  # reap finished runners
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break


if __name__ == "__main__":
    job = serve(sys.argv[1])
    if job is not None:
        _run_program(*job)
