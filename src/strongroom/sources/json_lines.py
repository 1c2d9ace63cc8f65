"""One JSON object per line over a stream socket: what QMP and the guest agent speak.

The peer is not trusted (the guest agent runs inside the guest, QEMU's monitor
answers with what the guest's devices look like), so a line is bounded
(`MAX_LINE`): a peer that never sends a newline ends the session with a
one-line error instead of growing our memory, and so is its time: a line must
be complete by a deadline (by default the socket's timeout from when reading
starts), so a peer trickling one byte just inside each timeout cannot stall us.
Every failure is the caller's
`error` class with the caller's `label` in front ("QMP /run/vm.sock: ...").
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

from strongroom.errors import SourceError

JsonObject = dict[str, Any]
MAX_LINE = 16 << 20  # far above any answer strongroom asks for (query-block of many disks)


def connect_unix(path: str, timeout: float) -> socket.socket:
    """A connected unix stream socket; OSError as the socket module raises it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


class JsonLineSocket:
    """A connected socket carrying JSON lines; closes the socket on `close`."""

    def __init__(
        self, sock: socket.socket, label: str, error: type[SourceError] = SourceError
    ) -> None:
        self.sock = sock
        self.label = label
        self._error = error
        self._buffer = bytearray()

    def fail(self, reason: str) -> SourceError:
        return self._error(f"{self.label}: {reason}")

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise self.fail(str(err.strerror or err)) from None

    def send(self, doc: JsonObject) -> None:
        self.send_raw(json.dumps(doc).encode() + b"\n")

    def read_line(self, deadline: float | None = None) -> bytes:
        """The next line without its newline, complete by `deadline` (a
        time.monotonic() value; default: `timeout` from now, none if the socket
        blocks). `error` once the deadline passes, however the bytes trickle."""
        timeout = self.timeout  # the socket's: restored after the read
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        start = 0
        try:
            while (end := self._buffer.find(b"\n", start)) < 0:
                if len(self._buffer) > MAX_LINE:
                    raise self.fail(f"a message longer than {MAX_LINE >> 20} MiB")
                start = len(self._buffer)
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._late(timeout)
                    self.sock.settimeout(remaining)
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    raise self._late(timeout) from None
                except OSError as err:
                    raise self.fail(str(err.strerror or err)) from None
                if not data:
                    raise self.fail("connection closed")
                self._buffer += data
        finally:
            if deadline is not None:
                with contextlib.suppress(OSError):
                    self.sock.settimeout(timeout)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    @property
    def timeout(self) -> float | None:
        """What a read without a deadline may take in all (the socket's timeout)."""
        return self.sock.gettimeout()

    def _late(self, timeout: float | None) -> SourceError:
        return self.fail(f"no answer within {timeout or 0:g} s")

    def read(self, deadline: float | None = None) -> JsonObject:
        """The next line as a JSON object; `error` if it is not one."""
        return self.parse(self.read_line(deadline))

    def parse(self, line: bytes) -> JsonObject:
        try:
            doc = json.loads(line)
        except ValueError:
            raise self.fail("malformed message") from None
        if not isinstance(doc, dict):
            raise self.fail("malformed message")
        return doc

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
