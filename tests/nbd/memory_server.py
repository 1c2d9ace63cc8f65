"""Run NbdServer over an in-memory export in its own process, for tests that
measure the server process itself (threads, CPU time, file descriptors, log
volume). Logs WARNING and up to stderr, prints "ready" once it listens, and
serves until SIGTERM.

    python tests/nbd/memory_server.py SOCKET [--size N] [--max-clients N]
        [--client-timeout S] [--workers N] [--nofile N]
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys
import threading

from strongroom.nbd.exports import MemoryExport
from strongroom.nbd.limits import ServerLimits
from strongroom.nbd.server import NbdServer

PATTERN = bytes(range(256))


def data(size: int) -> bytes:
    """The export's bytes: tests compare reads against the same function."""
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--max-clients", type=int, default=64)
    parser.add_argument("--client-timeout", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--nofile", type=int, default=0, help="lower RLIMIT_NOFILE to this")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    limits = ServerLimits(
        max_clients=args.max_clients, client_timeout=args.client_timeout, workers=args.workers
    )
    server = NbdServer({"disk": MemoryExport("disk", data(args.size))}, limits=limits)
    server.listen_unix(args.socket)
    if args.nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
