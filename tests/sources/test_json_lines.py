"""The JSON-lines socket that QMP and the guest agent share: a hostile peer
gets one-line errors, never unbounded memory or an internal error."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import SourceError
from strongroom.sources import json_lines
from strongroom.sources.guest import GuestAgent, GuestAgentError, GuestAgentRefused
from strongroom.sources.json_lines import JsonLineSocket
from strongroom.sources.qmp import QmpClient


@pytest.fixture
def pair() -> Iterator[tuple[JsonLineSocket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(2)
    lines = JsonLineSocket(ours, "peer test")
    yield lines, theirs
    lines.close()
    theirs.close()


def test_objects_split_across_reads(pair: tuple[JsonLineSocket, socket.socket]) -> None:
    lines, peer = pair
    peer.sendall(b'{"a": 1}\n{"b"')
    assert lines.read() == {"a": 1}
    peer.sendall(b": 2}\n")
    assert lines.read() == {"b": 2}
    lines.send({"execute": "x"})
    assert json.loads(peer.recv(100)) == {"execute": "x"}


@pytest.mark.parametrize("line", [b"[1, 2]", b"not json", b'"text"', b"\xff\xfe"])
def test_a_line_that_is_not_an_object(
    pair: tuple[JsonLineSocket, socket.socket], line: bytes
) -> None:
    lines, peer = pair
    peer.sendall(line + b"\n")
    with pytest.raises(SourceError, match=r"^peer test: malformed message$"):
        lines.read()


def test_an_endless_line_is_refused(
    pair: tuple[JsonLineSocket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_lines, "MAX_LINE", 1 << 20)
    lines, peer = pair

    def flood() -> None:
        try:
            for _ in range(64):
                peer.sendall(b"x" * 65536)
        except OSError:
            pass

    thread = threading.Thread(target=flood)
    thread.start()
    with pytest.raises(SourceError, match="longer than 1 MiB"):
        lines.read()
    lines.close()
    thread.join()


def test_closed_and_silent_peers(pair: tuple[JsonLineSocket, socket.socket]) -> None:
    lines, peer = pair
    lines.sock.settimeout(0.2)
    with pytest.raises(SourceError, match=r"^peer test: no answer within 0.2 s$"):
        lines.read()
    peer.close()
    with pytest.raises(SourceError, match=r"^peer test: connection closed$"):
        lines.read()


def test_guest_agent_error_that_is_not_an_object(tmp_path: Path) -> None:
    """A guest answering `{"error": "..."}` is a refusal, not an internal error."""
    path = str(tmp_path / "qga.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def agent() -> None:
        conn, _ = server.accept()
        with conn:
            buf = b""
            while b"\n" not in buf:
                buf += conn.recv(4096)
            sync = json.loads(buf.partition(b"\n")[0].lstrip(b"\xff"))
            conn.sendall(b"\xff" + json.dumps({"return": sync["arguments"]["id"]}).encode() + b"\n")
            conn.recv(4096)
            conn.sendall(b'{"error": "no"}\n')

    thread = threading.Thread(target=agent)
    thread.start()
    try:
        with GuestAgent(path, 2) as ga, pytest.raises(GuestAgentRefused, match="freeze: no"):
            ga.execute("guest-fsfreeze-freeze")
    finally:
        thread.join()
        server.close()


# --- a peer that trickles: the timeout is one deadline, not per recv ------------

TIMEOUT = 0.4
SLACK = 0.6  # scheduling on a busy machine; the old code took TRICKLE_FOR seconds
TRICKLE_FOR = 4.0


def _trickle(conn: socket.socket, chunks: Iterator[bytes], stop: threading.Event) -> None:
    """Send one piece every 0.05 s, each well inside the timeout, for a while."""
    end = time.monotonic() + TRICKLE_FOR
    try:
        for piece in chunks:
            if stop.is_set() or time.monotonic() > end:
                return
            conn.sendall(piece)
            time.sleep(0.05)
    except OSError:
        pass


def _bytes() -> Iterator[bytes]:
    yield b'{"return": "'
    while True:
        yield b"x"


def _events() -> Iterator[bytes]:
    while True:
        yield b'{"event": "NOISE", "data": {}}\n'


def test_a_line_trickled_byte_by_byte_ends_at_the_deadline(
    pair: tuple[JsonLineSocket, socket.socket],
) -> None:
    lines, peer = pair
    lines.sock.settimeout(TIMEOUT)
    stop = threading.Event()
    thread = threading.Thread(target=_trickle, args=(peer, _bytes(), stop))
    thread.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError, match=rf"^peer test: no answer within {TIMEOUT:g} s$"):
            lines.read()
        assert time.monotonic() - t0 < TIMEOUT + SLACK
        assert lines.sock.gettimeout() == TIMEOUT  # restored for the next request
    finally:
        stop.set()
        thread.join()


def _fake_agent(
    path: str, stage: str, stop: threading.Event
) -> tuple[socket.socket, threading.Thread]:
    """A guest agent that answers the sync (unless `stage` is "sync") and then
    trickles an answer that never ends."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def agent() -> None:
        conn, _ = server.accept()
        with conn:
            buf = b""
            while b"\n" not in buf:
                buf += conn.recv(4096)
            if stage == "execute":
                sync = json.loads(buf.partition(b"\n")[0].lstrip(b"\xff"))
                token = sync["arguments"]["id"]
                conn.sendall(b"\xff" + json.dumps({"return": token}).encode() + b"\n")
                conn.recv(4096)
            _trickle(conn, _bytes(), stop)

    thread = threading.Thread(target=agent)
    thread.start()
    return server, thread


@pytest.mark.parametrize("stage", ["sync", "execute"])
def test_a_trickling_guest_agent_fails_within_its_timeout(tmp_path: Path, stage: str) -> None:
    path = str(tmp_path / "qga.sock")
    stop = threading.Event()
    server, thread = _fake_agent(path, stage, stop)
    t0 = time.monotonic()
    try:
        late = pytest.raises(GuestAgentError, match=rf"no answer within {TIMEOUT:g} s")
        with late, GuestAgent(path, TIMEOUT) as agent:
            assert stage == "execute"
            t0 = time.monotonic()
            agent.execute("guest-fsfreeze-freeze")
        assert time.monotonic() - t0 < TIMEOUT + SLACK
    finally:
        stop.set()
        thread.join()
        server.close()


def test_qmp_answers_drowned_in_events_end_at_the_deadline(tmp_path: Path) -> None:
    """A QMP peer that greets, then sends events forever and never answers:
    `execute` has one deadline, events included."""
    path = str(tmp_path / "qmp.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    stop = threading.Event()

    def qemu() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b'{"QMP": {"version": {}}}\n')
            conn.recv(4096)  # qmp_capabilities
            conn.sendall(b'{"return": {}, "id": 1}\n')
            conn.recv(4096)
            _trickle(conn, _events(), stop)

    thread = threading.Thread(target=qemu)
    thread.start()
    try:
        with QmpClient(path, timeout=TIMEOUT) as qmp:
            t0 = time.monotonic()
            with pytest.raises(SourceError, match=rf"no answer within {TIMEOUT:g} s"):
                qmp.execute("query-status")
            assert time.monotonic() - t0 < TIMEOUT + SLACK
    finally:
        stop.set()
        thread.join()
        server.close()
