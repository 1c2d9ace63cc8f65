"""Exact-length socket I/O: partial sends finish, timeouts and closed peers raise."""

from __future__ import annotations

import array
import socket
import threading
import time

import pytest

from strongroom.nbd.wire import WireError, discard, recv_bytes, send, set_timeouts


def test_partial_sendmsg_finishes_every_part_in_order() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # force partial sends
    words = array.array("I", range(300_000))  # a view whose items are 4 bytes
    got = bytearray()

    def reader() -> None:
        while chunk := theirs.recv(65536):
            got.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    send(ours, [b"head", memoryview(words), bytearray(b"mid"), b"", b"tail"])
    ours.close()
    thread.join(10)
    assert bytes(got) == b"head" + words.tobytes() + b"midtail"
    theirs.close()


def test_receive_timeouts_and_end_of_file() -> None:
    ours, theirs = socket.socketpair()
    set_timeouts(ours, 0.2)
    started = time.monotonic()
    with pytest.raises(WireError, match="timed out"):
        recv_bytes(ours, 10)
    assert time.monotonic() - started < 2
    theirs.sendall(b"x" * 70_000 + b"abc")
    discard(ours, 70_000)
    assert recv_bytes(ours, 3) == b"abc"
    theirs.close()
    with pytest.raises(WireError, match="closed"):
        recv_bytes(ours, 1)
    ours.close()
