"""Exact-length socket I/O with kernel timeouts, shared by client and server.

Sockets stay in blocking mode and get SO_RCVTIMEO/SO_SNDTIMEO instead of
Python's `settimeout`: a timeout-mode socket polls before every call, while a
blocking `recv_into(..., MSG_WAITALL)` fills a whole multi-megabyte payload in
one system call. A kernel timeout surfaces as EAGAIN, which is reported as
`WireError` like every other failure, so callers never hang forever.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview


class WireError(Exception):
    """The peer went away, timed out or the socket failed; the message says which."""


def set_timeouts(sock: socket.socket, receive: float | None, send: float | None = -1.0) -> None:
    """Blocking mode plus kernel receive/send timeouts in seconds (None or 0: wait
    forever; `send` defaults to `receive`)."""
    sock.settimeout(None)
    for option, seconds in (
        (socket.SO_RCVTIMEO, receive),
        (socket.SO_SNDTIMEO, receive if send == -1.0 else send),
    ):
        whole = int(seconds or 0)
        micro = int(((seconds or 0) - whole) * 1_000_000)
        sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("@ll", whole, micro))


def tune(sock: socket.socket) -> None:
    """TCP_NODELAY on TCP sockets: requests and reply headers are small and latency-bound."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def arm(sock: socket.socket, deadline: float) -> None:
    """Kernel timeouts for what is left until `deadline` (a `time.monotonic()` instant);
    WireError if it has passed. Before each system call of a phase with a total time
    limit, so a peer that trickles one byte at a time cannot stretch it."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise WireError("timed out waiting for the peer")
    set_timeouts(sock, max(left, 0.001))


def recv_into(sock: socket.socket, view: memoryview, deadline: float | None = None) -> None:
    """Fill `view` completely from `sock` (it must be a 1-D byte view), by `deadline`
    if one is given (see `arm`)."""
    while view:
        if deadline is not None:
            arm(sock, deadline)
        try:
            n = sock.recv_into(view, len(view), socket.MSG_WAITALL)
        except (BlockingIOError, TimeoutError):
            raise WireError("timed out waiting for the peer") from None
        except OSError as err:
            raise WireError(f"connection failed: {err.strerror or err}") from None
        if n == 0:
            raise WireError("connection closed by the peer")
        view = view[n:]


def recv_bytes(sock: socket.socket, length: int, deadline: float | None = None) -> bytearray:
    """Exactly `length` bytes (callers bound `length` before asking)."""
    buf = bytearray(length)
    recv_into(sock, memoryview(buf), deadline)
    return buf


def discard(sock: socket.socket, length: int) -> None:
    """Read and drop `length` bytes with bounded memory."""
    scratch = memoryview(bytearray(min(length, 1 << 16)))
    while length:
        n = min(length, len(scratch))
        recv_into(sock, scratch[:n])
        length -= n


def send(sock: socket.socket, parts: Sequence[Buffer]) -> None:
    """Send all of `parts` in order: one sendmsg for the common case, no concatenation."""
    try:
        if len(parts) == 1:
            sock.sendall(parts[0])
            return
        sent = sock.sendmsg(parts)
        for part in parts:  # a partial sendmsg: finish each part from where it stopped
            view = memoryview(part).cast("B")
            if sent >= len(view):
                sent -= len(view)
                continue
            sock.sendall(view[sent:])
            sent = 0
    except (BlockingIOError, TimeoutError):
        raise WireError("timed out sending to the peer") from None
    except OSError as err:
        raise WireError(f"connection failed: {err.strerror or err}") from None
