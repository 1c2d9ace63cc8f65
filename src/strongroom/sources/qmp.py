"""A small synchronous QMP (QEMU Machine Protocol) client.

QMP is JSON objects over a stream socket: a greeting, `qmp_capabilities`, then
commands answered by `return` or `error`, with asynchronous `event` objects
interleaved. One command at a time is all strongroom needs, so this is a
blocking client; events that arrive meanwhile are queued for `wait_event`.
Addresses: a unix socket path, `unix:PATH`, or `tcp:HOST:PORT`. The line
protocol itself (bounded lines, errors) is `sources/json_lines.py`.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from strongroom.errors import SourceError
from strongroom.sources.json_lines import JsonLineSocket, JsonObject, connect_unix


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
        self._next_id = 0
        try:
            if address.startswith("tcp:"):
                host, _, port = address[4:].rpartition(":")
                sock = socket.create_connection((host, int(port)), timeout=timeout)
            else:
                path = address[5:] if address.startswith("unix:") else address
                sock = connect_unix(path, timeout)
        except (OSError, ValueError) as err:
            raise SourceError(f"QMP {address}: cannot connect: {err}") from None
        self._lines = JsonLineSocket(sock, f"QMP {address}")
        self._sock = sock
        try:
            greeting = self._lines.read()  # within `timeout`, however it trickles
            if "QMP" not in greeting:
                raise SourceError(f"QMP {address}: not a QMP server")
            self.version = greeting["QMP"].get("version", {}).get("qemu", {})
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def execute(self, command: str, arguments: JsonObject | None = None) -> Any:
        """Run one command; its `return` value, or QmpError with QEMU's message."""
        self._next_id += 1
        msg: JsonObject = {"execute": command, "id": self._next_id}
        if arguments:
            msg["arguments"] = arguments
        self._lines.send(msg)
        timeout = self._lines.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # one deadline for the answer, events in between included
            reply = self._lines.read(deadline)
            if "event" in reply:
                self._events.append(reply)
                continue
            if reply.get("id") != self._next_id:
                continue
            if "error" in reply:
                error = reply["error"]
                if not isinstance(error, dict):
                    raise QmpError(f"{command}: {error}")
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
        while True:
            if time.monotonic() >= deadline:
                raise SourceError(f"QMP {self.address}: no {name} event within {timeout:.0f} s")
            try:
                ev = self._lines.read(deadline)
            except SourceError:
                if time.monotonic() >= deadline:
                    raise SourceError(f"QMP {self.address}: no {name} event") from None
                raise
            if "event" not in ev:
                continue
            if ev.get("event") == name and match(ev.get("data", {})):
                return ev
            self._events.append(ev)

    def close(self) -> None:
        self._lines.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
