"""Lock objects as other processes (live, dead, elsewhere) would have left them."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time

from strongroom.repository.format import lock_name
from strongroom.repository.repo import Repository


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lock(
    repo: Repository,
    *,
    pid: int,
    host: str | None = None,
    exclusive: bool = False,
    age: float = 0.0,
) -> str:
    """Store a lock object of process `pid` on `host` (default: this one), taken
    `age` seconds ago; returns its object name."""
    doc = {
        "exclusive": exclusive,
        "host": host or socket.gethostname(),
        "pid": pid,
        "user": "someone",
        "time": time.time() - age,
    }
    name = lock_name(secrets.token_hex(32))
    repo.backend.create(name, repo.sealer.seal(json.dumps(doc).encode(), b"lock"))
    return name
