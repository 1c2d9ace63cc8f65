"""The request/reply engine under `NbdClient`: handles, requests in flight, and
the checking of every reply against the request it answers.

Replies (simple or structured, in any order, interleaved) are matched to their
request by handle. Data chunks must lie inside their read and not overlap, a
successful read must be fully covered, block status must name a negotiated
context, and payload sizes are checked before anything is read or allocated.
A violation or a socket failure closes the connection for good (`broken`);
a server's error reply only fails its own request.
"""

from __future__ import annotations

import bisect
import logging
import socket
from collections.abc import Callable

from strongroom.errors import SourceError
from strongroom.nbd import protocol as p
from strongroom.nbd.wire import WireError, recv_bytes, recv_into, send

_log = logging.getLogger(__name__)

MAX_STATUS_PAYLOAD = 16 << 20  # 2M extents: far beyond what any server sends per request
MAX_ERROR_PAYLOAD = 6 + p.MAX_STRING + 8 + 1024
_ZEROS = bytes(1 << 20)
_COMMAND_NAMES = {
    p.CMD_READ: "read",
    p.CMD_WRITE: "write",
    p.CMD_FLUSH: "flush",
    p.CMD_TRIM: "trim",
    p.CMD_WRITE_ZEROES: "write zeroes",
    p.CMD_BLOCK_STATUS: "block status",
}


class NbdError(SourceError):
    """An NBD operation failed: the message names the URI, the operation and the error.

    `error` is the protocol error value (errno number, e.g. 5 for EIO) when the
    server replied with an error, None when the connection or protocol failed.
    """

    def __init__(self, message: str, *, error: int | None = None) -> None:
        super().__init__(message)
        self.error = error


class Request:
    """One request in flight and what its replies have delivered so far."""

    __slots__ = (
        "callback",
        "command",
        "covered",
        "done",
        "error",
        "extents",
        "filled",
        "handle",
        "length",
        "offset",
        "view",
    )

    def __init__(
        self, handle: int, command: int, offset: int, length: int, view: memoryview | None
    ) -> None:
        self.handle = handle
        self.command = command
        self.offset = offset
        self.length = length
        self.view = view  # where a read's data goes
        self.done = False
        self.error: NbdError | None = None
        self.covered: list[tuple[int, int]] = []  # content chunks so far, sorted
        self.filled = 0
        self.extents: dict[int, list[tuple[int, int]]] = {}  # by context id
        self.callback: Callable[[Request], None] | None = None  # called once answered


class Transport:
    """One negotiated connection: sends requests, receives and checks replies.

    Not thread-safe (see NbdClient). `label` prefixes every error message.
    """

    def __init__(
        self, sock: socket.socket, label: str, structured: bool, context_ids: set[int]
    ) -> None:
        self._sock = sock
        self.label = label
        self.structured = structured
        self.context_ids = context_ids
        self.broken: NbdError | None = None
        self.closed = False
        self.bytes_read = 0
        self._pending: dict[int, Request] = {}
        self._next_handle = 1
        self._header = bytearray(p.CHUNK_OFFSET_HOLE.size)

    def submit(
        self,
        command: int,
        flags: int,
        offset: int,
        length: int,
        payload: memoryview | None,
        view: memoryview | None,
    ) -> Request:
        """Send one request (header and payload in one sendmsg, never concatenated);
        it is registered before it is sent, so no reply can miss it."""
        if self.broken is not None:
            raise self.broken
        if self.closed:
            raise NbdError(f"{self.label}: the connection is closed")
        handle = self._next_handle
        self._next_handle += 1
        req = Request(handle, command, offset, length, view)
        self._pending[handle] = req
        header = p.REQUEST.pack(p.REQUEST_MAGIC, flags, command, handle, offset, length)
        try:
            send(self._sock, [header] if payload is None else [header, payload])
        except WireError as err:
            raise self.fail(str(err)) from None
        return req

    def settle(self, req: Request) -> NbdError | None:
        """Receive replies until `req` is answered; its server error, if any."""
        while not req.done:
            self._receive()
        return req.error

    def close(self) -> None:
        """Answer what is in flight, send NBD_CMD_DISC and close; idempotent, never raises."""
        if self.closed:
            return
        if self.broken is None:
            try:
                while self._pending:
                    self._receive()
                send(self._sock, [p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_DISC, 0, 0, 0)])
            except (NbdError, WireError):
                pass
        self.closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def fail(self, reason: str) -> NbdError:
        """Mark the connection dead (every later call raises the same error) and close it."""
        if self.broken is None:
            self.broken = NbdError(f"{self.label}: {reason}")
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self.closed = True
            _log.debug("%s", self.broken)
        return self.broken

    def violation(self, reason: str) -> NbdError:
        return self.fail(f"protocol violation: {reason}")

    def _recv(self, view: memoryview) -> None:
        if self.broken is not None:
            raise self.broken
        try:
            recv_into(self._sock, view)
        except WireError as err:
            raise self.fail(str(err)) from None

    def _recv_bytes(self, length: int) -> bytearray:
        if self.broken is not None:
            raise self.broken
        try:
            return recv_bytes(self._sock, length)
        except WireError as err:
            raise self.fail(str(err)) from None

    def _receive(self) -> None:
        """Read one simple reply or one structured chunk and apply it to its request."""
        header = memoryview(self._header)
        self._recv(header[: p.SIMPLE_REPLY.size])
        (magic,) = p.U32.unpack_from(header, 0)
        if magic == p.SIMPLE_REPLY_MAGIC:
            _, error, handle = p.SIMPLE_REPLY.unpack_from(header, 0)
            self._simple_reply(self._lookup(handle), error)
        elif magic == p.STRUCTURED_REPLY_MAGIC and self.structured:
            self._recv(header[p.SIMPLE_REPLY.size : p.CHUNK.size])
            _, flags, kind, handle, length = p.CHUNK.unpack_from(header, 0)
            req = self._lookup(handle)
            self._chunk(req, kind, length)
            if flags & p.REPLY_FLAG_DONE:
                self._finish(req)
            elif kind == p.REPLY_TYPE_NONE:
                raise self.violation("NBD_REPLY_TYPE_NONE without the DONE flag")
        else:
            raise self.violation(f"bad reply magic {magic:#x}")

    def _lookup(self, handle: int) -> Request:
        req = self._pending.get(handle)
        if req is None:
            raise self.violation(f"reply for unknown handle {handle}")
        return req

    def _simple_reply(self, req: Request, error: int) -> None:
        if error:
            req.error = self._server_error(req, error, "")
        elif req.command == p.CMD_READ:
            if self.structured:
                raise self.violation("simple reply with data to a read")
            assert req.view is not None
            self._recv(req.view)
            self.bytes_read += req.length
            req.filled = req.length
        elif req.command == p.CMD_BLOCK_STATUS:
            raise self.violation("simple reply to block status")
        self._finish(req)

    def _chunk(self, req: Request, kind: int, length: int) -> None:
        if kind == p.REPLY_TYPE_OFFSET_DATA and req.command == p.CMD_READ:
            if length < 9:
                raise self.violation(f"data chunk of length {length}")
            head = memoryview(self._header)[p.CHUNK.size : p.CHUNK.size + 8]
            self._recv(head)
            (offset,) = p.U64.unpack_from(head, 0)
            start = self._claim(req, offset, length - 8)
            assert req.view is not None
            self._recv(req.view[start : start + length - 8])
            self.bytes_read += length - 8
        elif kind == p.REPLY_TYPE_OFFSET_HOLE and req.command == p.CMD_READ:
            if length != 12:
                raise self.violation(f"hole chunk of length {length}")
            head = memoryview(self._header)[p.CHUNK.size : p.CHUNK.size + 12]
            self._recv(head)
            offset, size = p.U64.unpack_from(head, 0)[0], p.U32.unpack_from(head, 8)[0]
            if size == 0:
                raise self.violation("hole chunk of size 0")
            start = self._claim(req, offset, size)
            assert req.view is not None
            for pos in range(start, start + size, len(_ZEROS)):
                n = min(len(_ZEROS), start + size - pos)
                req.view[pos : pos + n] = _ZEROS[:n]
        elif kind == p.REPLY_TYPE_BLOCK_STATUS and req.command == p.CMD_BLOCK_STATUS:
            if length > MAX_STATUS_PAYLOAD:
                raise self.violation(f"block status chunk of {length} bytes")
            try:
                context_id, extents = p.decode_extents(self._recv_bytes(length))
            except p.ProtocolViolation as err:
                raise self.violation(str(err)) from None
            if context_id not in self.context_ids:
                raise self.violation(f"block status for unknown context id {context_id}")
            if context_id in req.extents:
                raise self.violation(f"two block status chunks for context id {context_id}")
            req.extents[context_id] = extents
        elif kind & p.REPLY_TYPE_ERROR_BIT:
            if length > MAX_ERROR_PAYLOAD:
                raise self.violation(f"error chunk of {length} bytes")
            try:
                code, message, offset = p.decode_error_payload(kind, self._recv_bytes(length))
            except p.ProtocolViolation as err:
                raise self.violation(str(err)) from None
            if offset is not None and not req.offset <= offset < req.offset + max(req.length, 1):
                raise self.violation(f"error offset {offset} outside the request")
            if req.error is None:
                req.error = self._server_error(req, code, message)
        elif kind == p.REPLY_TYPE_NONE:
            if length:
                raise self.violation("NBD_REPLY_TYPE_NONE with a payload")
        else:
            raise self.violation(f"unexpected chunk type {kind} for command {req.command}")

    def _claim(self, req: Request, offset: int, size: int) -> int:
        """Check a content chunk lies inside `req` and overlaps nothing; its start in req.view."""
        start = offset - req.offset
        if start < 0 or start + size > req.length:
            raise self.violation(
                f"chunk {offset}+{size} outside the read {req.offset}+{req.length}"
            )
        covered = req.covered
        i = bisect.bisect_left(covered, (start, start + size))
        if (i > 0 and covered[i - 1][1] > start) or (
            i < len(covered) and covered[i][0] < start + size
        ):
            raise self.violation(f"chunk {offset}+{size} overlaps an earlier chunk")
        covered.insert(i, (start, start + size))
        req.filled += size
        return start

    def _finish(self, req: Request) -> None:
        if req.command == p.CMD_READ and req.error is None and req.filled != req.length:
            raise self.violation(
                f"read {req.offset}+{req.length} ended with only {req.filled} bytes"
            )
        del self._pending[req.handle]
        req.done = True
        if req.callback is not None:
            req.callback(req)

    def _server_error(self, req: Request, code: int, message: str) -> NbdError:
        what = _COMMAND_NAMES.get(req.command, f"command {req.command}")
        detail = f" ({message})" if message else ""
        return NbdError(
            f"{self.label}: {what} of {req.length} bytes at {req.offset} failed: "
            f"{p.error_name(code)}{detail}",
            error=code,
        )
