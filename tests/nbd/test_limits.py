"""The server against hostile local clients: clients that queue huge reads and
never read the replies, that exhaust the file descriptors, that open hundreds
of connections, that never finish the handshake. Each test reproduces the
attack and measures what a well-behaved client still gets, and what the server
process spends (threads, CPU time, log bytes). All on Unix sockets, all bounded
in time."""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import strongroom
from strongroom.errors import UsageError
from strongroom.nbd import protocol as p
from strongroom.nbd.client import NbdClient, NbdError
from strongroom.nbd.exports import MemoryExport
from strongroom.nbd.limits import LogThrottle, ServerLimits
from strongroom.nbd.pool import FairPool, PoolClosed
from strongroom.nbd.server import NbdServer
from strongroom.nbd.uri import format_unix_uri
from tests.nbd.memory_server import data

MiB = 1 << 20
SERVER_SCRIPT = Path(__file__).with_name("memory_server.py")
SRC = Path(strongroom.__file__).resolve().parents[1]


# --- raw clients -------------------------------------------------------------------------------


def raw_connect(path: Path, *, rcvbuf: int = 0, timeout: float = 5) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return buf


def export_name_handshake(sock: socket.socket) -> int:
    """Fixed newstyle, NBD_OPT_EXPORT_NAME for the default export (simple replies
    only); the export's size."""
    magic, opt, _ = p.GREETING.unpack(recv_exact(sock, p.GREETING.size))
    assert (magic, opt) == (p.NBDMAGIC, p.IHAVEOPT)
    sock.sendall(p.U32.pack(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES))
    sock.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_EXPORT_NAME, 0))
    size, _ = p.EXPORT_NAME_REPLY.unpack(recv_exact(sock, p.EXPORT_NAME_REPLY.size))
    return int(size)


def flood_reads(sock: socket.socket, length: int, limit: int = 2000) -> int:
    """Pipeline reads of `length` bytes until the server stops taking requests
    (back-pressure) or `limit` are sent; never reads a reply. Requests sent."""
    sock.setblocking(False)
    sent = 0
    header = b""
    while sent < limit:
        header = header or p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, sent + 1, 0, length)
        try:
            n = sock.send(header)
        except BlockingIOError:
            break
        header = header[n:]
        if not header:
            sent += 1
    return sent


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Drain what the server sent until it closes the connection; False if it is
    still open after `seconds`."""
    sock.setblocking(True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return False
        try:
            if not sock.recv(1 << 20):
                return True
        except OSError:
            return True
    return False


def settles(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition` becomes true within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def timed_reads(uri: str, expected: bytes, count: int = 8) -> list[float]:
    """Seconds each of `count` reads (4 KiB to 1 MiB) took; checks the bytes."""
    times = []
    with NbdClient.connect(uri, timeout=20) as client:
        for i in range(count):
            length = 4096 << (i % 9)
            offset = (i * 7919 * 4096) % (len(expected) - length)
            started = time.monotonic()
            assert client.pread(length, offset) == expected[offset : offset + length]
            times.append(time.monotonic() - started)
    return times


# --- the server in this process ----------------------------------------------------------------


@contextmanager
def memory_server(tmp_path: Path, size: int, limits: ServerLimits) -> Iterator[NbdServer]:
    server = NbdServer({"disk": MemoryExport("disk", data(size))}, limits=limits)
    server.listen_unix(str(tmp_path / "nbd.sock"))
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def test_clients_that_never_read_their_replies_starve_nobody(tmp_path: Path) -> None:
    size = 64 * MiB
    limits = ServerLimits(client_timeout=1.5, workers=4)
    with memory_server(tmp_path, size, limits) as server, ExitStack() as stack:
        path = tmp_path / "nbd.sock"
        hostile = []
        for _ in range(6):  # more hostile clients than workers
            sock = stack.enter_context(raw_connect(path, rcvbuf=4096))
            assert export_name_handshake(sock) == size
            assert flood_reads(sock, p.MAX_BLOCK) > 0
            hostile.append(sock)
        time.sleep(0.3)  # let their reads reach the workers and block their senders
        started = time.monotonic()
        times = timed_reads(format_unix_uri(str(path), ""), data(size))
        assert max(times) < 2.0, times  # before: every worker blocked for 120 s
        assert time.monotonic() - started < 4.0
        # The hostile clients are dropped once a send makes no progress for 1.5 s
        # (watched without reading from them: reading would let the sends progress).
        assert settles(lambda: server.active_connections == 0, 6.0)
        assert all(closed_within(sock, 2.0) for sock in hostile)


def test_the_servers_reply_memory_is_bounded_and_freed_by_the_timeout(tmp_path: Path) -> None:
    """Non-reading clients can fill the server-wide reply budget (memory) only until
    their sends time out; then a well-behaved client is served."""
    size = 64 * MiB
    limits = ServerLimits(
        max_bytes=p.MAX_BLOCK, max_total_bytes=2 * p.MAX_BLOCK, client_timeout=1.0
    )
    with memory_server(tmp_path, size, limits) as server, ExitStack() as stack:
        path = tmp_path / "nbd.sock"
        for _ in range(3):
            sock = stack.enter_context(raw_connect(path, rcvbuf=4096))
            export_name_handshake(sock)
            flood_reads(sock, p.MAX_BLOCK)
        time.sleep(0.2)
        started = time.monotonic()
        times = timed_reads(format_unix_uri(str(path), ""), data(size), count=3)
        assert time.monotonic() - started < 1.0 + 4.0, times
        assert settles(lambda: server.active_connections == 0, 6.0)


def test_a_client_pipelining_reads_is_held_by_back_pressure(tmp_path: Path) -> None:
    """A client that never reads can make the server hold at most max_requests
    requests; the rest stay in the socket buffers (TCP back-pressure)."""
    limits = ServerLimits(max_requests=4, client_timeout=30)
    with memory_server(tmp_path, 8 * MiB, limits) as server:
        sock = raw_connect(tmp_path / "nbd.sock", rcvbuf=4096)
        try:
            export_name_handshake(sock)
            sent = flood_reads(sock, MiB, limit=200_000)
            assert sent < 200_000  # the server stopped reading: our send would block
            # It still answers exactly what it took, in order of the buffers.
            sock.setblocking(True)
            sock.settimeout(10)
            magic, error, handle = p.SIMPLE_REPLY.unpack(recv_exact(sock, p.SIMPLE_REPLY.size))
            assert (magic, error, handle) == (p.SIMPLE_REPLY_MAGIC, 0, 1)
            assert recv_exact(sock, MiB) == data(8 * MiB)[:MiB]
        finally:
            sock.close()
        assert settles(lambda: server.active_connections == 0, 5.0)


def test_a_silent_client_is_dropped_after_the_handshake_timeout(tmp_path: Path) -> None:
    with memory_server(tmp_path, MiB, ServerLimits(client_timeout=1.0)) as server:
        sock = raw_connect(tmp_path / "nbd.sock")
        with sock:
            recv_exact(sock, p.GREETING.size)
            started = time.monotonic()
            assert closed_within(sock, 5.0)
            assert 0.8 < time.monotonic() - started < 3.0
        assert settles(lambda: server.active_connections == 0, 2.0)


def test_an_idle_client_is_dropped_only_with_an_idle_timeout(tmp_path: Path) -> None:
    limits = ServerLimits(client_timeout=1.0, idle_timeout=1.0)
    with memory_server(tmp_path, MiB, limits) as server:
        with raw_connect(tmp_path / "nbd.sock") as sock:
            export_name_handshake(sock)
            started = time.monotonic()
            assert closed_within(sock, 5.0)
            assert 0.8 < time.monotonic() - started < 3.0
        assert settles(lambda: server.active_connections == 0, 2.0)
    with (
        memory_server(tmp_path, MiB, ServerLimits(client_timeout=1.0)),
        raw_connect(tmp_path / "nbd.sock") as sock,
    ):  # by default, an idle client is fine
        export_name_handshake(sock)
        assert not closed_within(sock, 2.0)
        sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, 1, 0, 16))
        assert p.SIMPLE_REPLY.unpack(recv_exact(sock, 16)) == (p.SIMPLE_REPLY_MAGIC, 0, 1)
        assert recv_exact(sock, 16) == data(MiB)[:16]


def test_a_trickling_handshake_is_dropped_at_the_deadline(tmp_path: Path) -> None:
    """One byte every 0.2 s restarts a per-read timeout forever; the handshake has
    one deadline for all of it."""
    with memory_server(tmp_path, MiB, ServerLimits(client_timeout=1.0)):
        sock = raw_connect(tmp_path / "nbd.sock")
        with sock:
            recv_exact(sock, p.GREETING.size)
            sock.sendall(p.U32.pack(p.FLAG_C_FIXED_NEWSTYLE))
            sock.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_LIST, 60_000))
            started = time.monotonic()
            dropped = None
            while time.monotonic() - started < 6:
                try:
                    sock.send(b"x")
                except OSError:
                    dropped = time.monotonic() - started
                    break
                ready, _, _ = select.select([sock], [], [], 0.2)
                if ready and sock.recv(1) == b"":
                    dropped = time.monotonic() - started
                    break
            assert dropped is not None and dropped < 3.0


def test_hostile_requests_get_errors_not_allocations(tmp_path: Path) -> None:
    size = 4 * MiB
    with memory_server(tmp_path, size, ServerLimits()):
        path = tmp_path / "nbd.sock"
        with raw_connect(path) as sock:  # simple replies
            export_name_handshake(sock)
            asks = [
                (1, 0, 0xFFFFFFFF, p.EINVAL),  # above the maximum block: nothing allocated
                (2, size - 4096, 8192, p.EINVAL),  # beyond the end
                (3, (1 << 64) - 1, 1, p.EINVAL),  # offset at the very end of u64
                (4, size, 0, 0),  # zero-length read at the end: fine, no data
            ]
            for handle, offset, length, _ in asks:
                sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, handle, offset, length))
            for handle, _, _, error in asks:
                assert p.SIMPLE_REPLY.unpack(recv_exact(sock, 16)) == (
                    p.SIMPLE_REPLY_MAGIC,
                    error,
                    handle,
                )
            # A write bigger than the maximum block cannot be skipped safely: dropped.
            sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, 5, 0, 1 << 31))
            assert closed_within(sock, 5.0)
        with NbdClient.connect(format_unix_uri(str(path), ""), timeout=10) as client:
            # With structured replies an oversized read is EOVERFLOW.
            transport = client._transport
            req = transport.submit(p.CMD_READ, 0, 0, p.MAX_BLOCK + 1, None, memoryview(b""))
            error = transport.settle(req)
            assert error is not None and error.error == p.EOVERFLOW
            assert client.pread(4096, 0) == data(size)[:4096]
        with raw_connect(path) as sock:  # a huge option length: dropped, not allocated
            recv_exact(sock, p.GREETING.size)
            sock.sendall(p.U32.pack(p.FLAG_C_FIXED_NEWSTYLE))
            sock.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_GO, 0xFFFFFFFF))
            assert closed_within(sock, 5.0)


# --- the server in its own process ---------------------------------------------------------


@contextmanager
def server_process(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """memory_server.py on tmp_path/nbd.sock; yields the process and its stderr file."""
    log = tmp_path / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(SRC.parent)]))
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), str(tmp_path / "nbd.sock"), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready and proc.stdout.readline().strip() == "ready", log.read_text()
        yield proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def connect_many(path: Path, count: int, timeout: float = 0.5) -> list[socket.socket]:
    """Up to `count` connections; stops when one cannot connect within `timeout`
    (a full backlog makes a Unix socket's connect fail with EAGAIN: retried)."""
    socks = []
    for _ in range(count):
        deadline = time.monotonic() + timeout
        while True:
            try:
                socks.append(raw_connect(path, timeout=timeout))
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return socks
                time.sleep(0.005)
            except OSError:
                return socks
    return socks


def test_running_out_of_file_descriptors_does_not_spin(tmp_path: Path) -> None:
    size = 4 * MiB
    with server_process(tmp_path, "--size", str(size), "--nofile", "40") as (proc, log):
        path = tmp_path / "nbd.sock"
        clients = connect_many(path, 90)
        try:
            assert len(clients) > 40  # more than the server has descriptors for
            time.sleep(0.5)  # the accept loop meets EMFILE
            before = cpu_seconds(proc.pid)
            time.sleep(3)
            spent = cpu_seconds(proc.pid) - before
            assert spent < 0.5, f"the server burned {spent:.2f} s of CPU in 3 s"  # before: ~3 s
            text = log.read_text()
            assert "Too many open files" in text
            assert log.stat().st_size < 4096, text[:2000]  # before: 150 MB in 20 s
        finally:
            for sock in clients:
                sock.close()
        # Once the clients are gone the server serves again.
        uri = format_unix_uri(str(path), "")
        deadline = time.monotonic() + 15
        while True:
            try:
                assert max(timed_reads(uri, data(size), count=3)) < 2.0
                break
            except NbdError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert proc.poll() is None


def test_many_connections_are_refused_beyond_the_limit(tmp_path: Path) -> None:
    size = 4 * MiB
    args = ("--size", str(size), "--max-clients", "32", "--client-timeout", "4")
    with server_process(tmp_path, *args) as (proc, log):
        path = tmp_path / "nbd.sock"
        clients = connect_many(path, 500, timeout=2)
        try:
            assert len(clients) == 500
            greeted = refused = 0
            for sock in clients:
                try:
                    got = sock.recv(p.GREETING.size)
                except OSError:
                    got = b""
                if got:
                    greeted += 1
                else:
                    refused += 1
            assert greeted == 32 and refused == 468
            assert threads(proc.pid) <= 32 + 8  # before: one thread per connection, 500+
            # While the slots are held, a newcomer is refused at once, not left hanging.
            uri = format_unix_uri(str(path), "")
            started = time.monotonic()
            with pytest.raises(NbdError):
                NbdClient.connect(uri, timeout=10)
            assert time.monotonic() - started < 2
            # The silent 32 are dropped at the handshake timeout, and slots free up.
            assert all(closed_within(sock, 8.0) for sock in clients[:40])
            assert max(timed_reads(uri, data(size), count=4)) < 2.0
        finally:
            for sock in clients:
                sock.close()
        lines = [line for line in log.read_text().splitlines() if "refused" in line]
        assert 1 <= len(lines) <= 3, lines  # one line per 10 s, with a count
        assert proc.poll() is None


# --- the pieces --------------------------------------------------------------------------------


def test_fair_pool_lets_a_newcomer_run_before_a_deep_queue() -> None:
    pool = FairPool(workers=2, per_owner=1)
    order: list[str] = []
    gate = threading.Event()
    lock = threading.Lock()

    def job(tag: str, wait: bool = False) -> None:
        if wait:
            gate.wait(5)
        with lock:
            order.append(tag)

    try:
        for i in range(10):
            pool.submit("hog", lambda i=i: job(f"hog{i}", wait=i == 0))
        pool.submit("guest", lambda: job("guest"))
        deadline = time.monotonic() + 5
        while "guest" not in order and time.monotonic() < deadline:
            time.sleep(0.01)
        # The hog holds its one worker (blocked); the guest ran on the other.
        assert order == ["guest"]
        gate.set()
    finally:
        gate.set()
        pool.shutdown()
    assert order == ["guest", *(f"hog{i}" for i in range(10))]
    assert pool.threads <= 2
    with pytest.raises(PoolClosed):
        pool.submit("late", lambda: None)


def test_log_throttle_counts_what_it_holds_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert throttle.warning("k", "accept failed")
        for _ in range(1000):
            now[0] += 0.001
            assert not throttle.warning("k", "accept failed")
        assert throttle.warning("other", "different event")
        now[0] = 11
        assert throttle.warning("k", "accept failed")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "accept failed",
        "different event",
        "accept failed (and 1000 more times since the last report)",
    ]


def test_limits_are_checked() -> None:
    for bad in (
        {"max_clients": 0},
        {"workers": 0},
        {"max_requests": 0},
        {"max_bytes": 1024},
        {"max_total_bytes": p.MAX_BLOCK, "max_bytes": 2 * p.MAX_BLOCK},
        {"client_timeout": 0},
        {"client_timeout": -1},
        {"idle_timeout": 1e9},
    ):
        with pytest.raises(UsageError):
            ServerLimits(**bad)  # type: ignore[arg-type]
    assert ServerLimits(workers=4).client_workers == 3
    assert ServerLimits(workers=1).client_workers == 1
