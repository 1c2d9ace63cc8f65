"""Fixtures for the NBD tests: real qemu-nbd / nbdkit servers, our server over an
in-memory export, and small image builders. Every process and server started
here is stopped when its test ends."""

from __future__ import annotations

import functools
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.nbd.exports import MemoryExport
from strongroom.nbd.server import NbdServer
from strongroom.nbd.uri import format_tcp_uri, format_unix_uri

MiB = 1 << 20


def need(*tools: str) -> None:
    """Skip the calling test unless every tool is installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install qemu-utils libnbd-bin nbdkit)")


def run(
    *args: str | Path, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure the assertion shows its stderr."""
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}): {proc.stderr}"
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(proc: subprocess.Popen[bytes], connect: Callable[[], socket.socket]) -> None:
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"server exited early ({proc.returncode}): {err}")
        try:
            connect().close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("server did not start listening within 10 s") from None
            time.sleep(0.01)


def _unix_connect(path: Path) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))
        except OSError:
            s.close()
            raise
        return s

    return connect


@contextmanager
def spawn_server(
    args: list[str], sock: Path | None = None, port: int | None = None
) -> Iterator[None]:
    """Start a server process, wait until it accepts connections, kill it afterwards."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if sock is not None:
            _wait_ready(proc, _unix_connect(sock))
        else:
            assert port is not None
            _wait_ready(proc, lambda: socket.create_connection(("127.0.0.1", port), timeout=1))
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


@contextmanager
def qemu_nbd(image: Path, *args: str, sock: Path, export: str = "") -> Iterator[str]:
    """qemu-nbd serving `image` on a Unix socket; yields the URI."""
    need("qemu-nbd")
    cmd = ["qemu-nbd", *args, "-k", str(sock), "-t", "-e", "8"]
    if export:
        cmd += ["-x", export]
    with spawn_server([*cmd, str(image)], sock=sock):
        yield format_unix_uri(str(sock), export)


@contextmanager
def qemu_nbd_tcp(image: Path, *args: str) -> Iterator[str]:
    need("qemu-nbd")
    port = free_port()
    cmd = ["qemu-nbd", *args, "-b", "127.0.0.1", "-p", str(port), "-t", str(image)]
    with spawn_server(cmd, port=port):
        yield format_tcp_uri("127.0.0.1", port, "")


@contextmanager
def nbdkit(*args: str, sock: Path) -> Iterator[str]:
    """nbdkit in the foreground on a Unix socket; yields the URI."""
    need("nbdkit")
    with spawn_server(["nbdkit", "-f", "-U", str(sock), *args], sock=sock):
        yield format_unix_uri(str(sock), "")


@functools.cache
def pattern(size: int, seed: int = 1) -> bytes:
    """Incompressible but cheap test data: a random MiB repeated with a varying prefix."""
    block = random.Random(seed).randbytes(MiB)
    out = bytearray()
    for i in range(-(-size // MiB)):
        out += i.to_bytes(8, "big") + block[8:]
    return bytes(out[:size])


@dataclass
class Served:
    """Our server running over an in-memory export, plus the same bytes in a file."""

    server: NbdServer
    uri: str
    data: bytes
    holes: list[tuple[int, int]]
    file: Path
    sock: Path


SERVED_SIZE = 32 * MiB
SERVED_HOLES = [(4 * MiB, 4 * MiB), (20 * MiB + 65536, 1 * MiB), (SERVED_SIZE - MiB, MiB)]


def holey(size: int, holes: list[tuple[int, int]], seed: int = 1) -> bytes:
    """`pattern` with zeroes in the holes."""
    buf = bytearray(pattern(size, seed))
    for off, n in holes:
        buf[off : off + n] = bytes(n)
    return bytes(buf)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """Export "disk" (32 MiB with three holes) served on a Unix socket by NbdServer."""
    data = holey(SERVED_SIZE, SERVED_HOLES)
    file = tmp_path / "disk.raw"
    file.write_bytes(data)
    export = MemoryExport("disk", data, SERVED_HOLES, description="test disk")
    server = NbdServer({"disk": export})
    sock = tmp_path / "srv.sock"
    uri = server.listen_unix(str(sock))
    server.start()
    try:
        yield Served(server, uri, data, list(SERVED_HOLES), file, sock)
    finally:
        server.shutdown()
