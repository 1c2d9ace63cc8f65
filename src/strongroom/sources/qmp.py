"""A small synchronous QMP (QEMU Machine Protocol) client.

QMP is JSON objects over a stream socket: a greeting, `qmp_capabilities`, then
commands answered by `return` or `error`, with asynchronous `event` objects
interleaved. One command at a time is all strongroom needs, so this is a
blocking client; events that arrive meanwhile are queued for `wait_event`.
Addresses: a unix socket path, `unix:PATH`, or `tcp:HOST:PORT`.
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from strongroom.errors import SourceError

JsonObject = dict[str, Any]


class QmpError(SourceError):
    """The block layer refused a command; `error_class` is QMP's class name."""

    def __init__(self, message: str, error_class: str = "") -> None:
        super().__init__(message)
        self.error_class = error_class


class QmpClient:
    """One QMP session. Not thread-safe; a context manager closes it."""

    def __init__(self, address: str, timeout: float = 60.0) -> None:
        self.address = address
        self._events: deque[JsonObject] = deque()
        self._buf = b""
        self._next_id = 0
        try:
            if address.startswith("tcp:"):
                host, _, port = address[4:].rpartition(":")
                self._sock = socket.create_connection((host, int(port)), timeout=timeout)
            else:
                path = address[5:] if address.startswith("unix:") else address
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(path)
        except (OSError, ValueError) as err:
            raise SourceError(f"QMP {address}: cannot connect: {err}") from None
        try:
            greeting = self._read()
            if "QMP" not in greeting:
                raise SourceError(f"QMP {address}: not a QMP server")
            self.version = greeting["QMP"].get("version", {}).get("qemu", {})
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def _read(self) -> JsonObject:
        while b"\n" not in self._buf:
            try:
                data = self._sock.recv(65536)
            except OSError as err:
                raise SourceError(f"QMP {self.address}: {err}") from None
            if not data:
                raise SourceError(f"QMP {self.address}: connection closed")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            obj = json.loads(line)
        except ValueError:
            raise SourceError(f"QMP {self.address}: malformed message") from None
        if not isinstance(obj, dict):
            raise SourceError(f"QMP {self.address}: malformed message")
        return obj

    def execute(self, command: str, arguments: JsonObject | None = None) -> Any:
        """Run one command; its `return` value, or QmpError with QEMU's message."""
        self._next_id += 1
        msg: JsonObject = {"execute": command, "id": self._next_id}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as err:
            raise SourceError(f"QMP {self.address}: {err}") from None
        while True:
            reply = self._read()
            if "event" in reply:
                self._events.append(reply)
                continue
            if reply.get("id") != self._next_id:
                continue
            if "error" in reply:
                error = reply["error"]
                raise QmpError(
                    f"{command}: {error.get('desc', error)}", str(error.get("class", ""))
                )
            return reply.get("return")

    def wait_event(
        self, name: str, match: Callable[[JsonObject], bool] = lambda _: True, timeout: float = 60.0
    ) -> JsonObject:
        """Wait for an event (already queued ones count); SourceError on timeout."""
        for ev in list(self._events):
            if ev.get("event") == name and match(ev.get("data", {})):
                self._events.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        previous = self._sock.gettimeout()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SourceError(f"QMP {self.address}: no {name} event within {timeout:.0f} s")
                self._sock.settimeout(remaining)
                try:
                    ev = self._read()
                except SourceError:
                    if time.monotonic() >= deadline:
                        raise SourceError(f"QMP {self.address}: no {name} event") from None
                    raise
                if "event" not in ev:
                    continue
                if ev.get("event") == name and match(ev.get("data", {})):
                    return ev
                self._events.append(ev)
        finally:
            self._sock.settimeout(previous)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
