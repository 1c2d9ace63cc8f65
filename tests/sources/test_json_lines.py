"""The JSON-lines socket that QMP and the guest agent share: a hostile peer
gets one-line errors, never unbounded memory or an internal error."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import SourceError
from strongroom.sources import json_lines
from strongroom.sources.guest import GuestAgent, GuestAgentRefused
from strongroom.sources.json_lines import JsonLineSocket


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
