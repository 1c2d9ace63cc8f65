"""Which process namespace "this host" is, for judging whether a pid is alive.

A lock, a lease or a frozen view records its holder's pid; another process
may conclude the holder is dead only when the pid is gone *in the same pid
namespace*. Host names are not enough: containers and cloned VMs share them.
The identity hashes the host name, the machine id, the boot id and the pid
namespace, so two processes agree only when a pid means the same process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def host_id() -> str:
    """A stable hex id of this pid namespace on this boot of this machine."""
    try:
        pid_ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pid_ns = ""
    parts = [
        socket.gethostname(),
        _read("/etc/machine-id"),
        _read("/proc/sys/kernel/random/boot_id"),
        pid_ns,
    ]
    return hashlib.blake2s("\0".join(parts).encode(), digest_size=8).hexdigest()
