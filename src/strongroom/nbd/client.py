"""A pipelined NBD client: reads, writes and block status over one connection.

Thread safety: an `NbdClient` is used by one thread at a time (it owns one
socket and one table of requests in flight). For parallelism open several
clients (when the server sets `can_multi_conn`) or pipeline with `read_many`.

Every request goes out with a fresh handle; replies (simple or structured,
in any order, possibly interleaved) are matched to their request by handle and
checked against it: data chunks must lie inside the request and not overlap,
a successful read must be fully covered, block status must name a negotiated
context. A violation or a socket failure closes the connection and raises
`NbdError`; a server error reply raises `NbdError` with `error` set and leaves
the connection usable. Socket timeouts (default 30 s) bound every wait, and
payload sizes are checked before anything is allocated, so a hostile or hung
server can neither hang the client nor make it allocate without bound.
"""

from __future__ import annotations

import bisect
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from strongroom.errors import SourceError, UsageError
from strongroom.nbd import protocol as p
from strongroom.nbd.negotiate import HandshakeRefused, negotiate
from strongroom.nbd.uri import NbdAddress, parse_nbd_uri
from strongroom.nbd.wire import Buffer, WireError, recv_bytes, recv_into, send, set_timeouts, tune

_log = logging.getLogger(__name__)

MAX_STATUS_PAYLOAD = 16 << 20  # 2M extents: far beyond what any server sends per request
MAX_ERROR_PAYLOAD = 6 + p.MAX_STRING + 8 + 1024
STATUS_REQUEST_CAP = (1 << 32) - (1 << 20)  # lengths are 32 bits; stay 1 MiB aligned
ZEROES_REQUEST_CAP = 1 << 30
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True)
class Extent:
    """One block status descriptor: `flags` as defined by its metadata context."""

    offset: int
    length: int
    flags: int


class NbdError(SourceError):
    """An NBD operation failed: the message names the URI, the operation and the error.

    `error` is the protocol error value (errno number, e.g. 5 for EIO) when the
    server replied with an error, None when the connection or protocol failed.
    """

    def __init__(self, message: str, *, error: int | None = None) -> None:
        super().__init__(message)
        self.error = error


class _Request:
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
        self.extents: dict[int, list[tuple[int, int]]] = {}
        self.callback: Callable[[_Request], None] | None = None


class _Batch:
    """One range of `read_many`: its buffer and the requests that fill it."""

    __slots__ = ("data", "lead", "length", "offset", "requests", "unsent")

    def __init__(self, offset: int, length: int, lead: int, data: bytearray) -> None:
        self.offset = offset
        self.length = length
        self.lead = lead  # bytes before `offset` read only to honour the minimum block size
        self.data = data
        self.requests: list[_Request] = []
        self.unsent = 0


_Op = tuple[int, int, int, int, memoryview | None, memoryview | None]
# (command, flags, offset, length, payload to send, view to read into)


def _byte_view(data: Buffer) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _open_socket(address: NbdAddress, timeout: float | None, label: str) -> socket.socket:
    try:
        if address.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout or None)
                sock.connect(address.unix_path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((address.host, address.port), timeout or None)
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise NbdError(f"cannot connect to {label}: {reason}") from None
    return sock


class NbdClient:
    """One connection to one NBD export; see the module docstring for the contract."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        export: str = "",
        uri: str | None = None,
        meta_contexts: Sequence[str] = (),
        timeout: float | None = 30.0,
        structured_replies: bool = True,
    ) -> None:
        """Negotiate on a connected socket (which the client then owns); most callers
        use `connect()`. Raises NbdError (and closes the socket) if the handshake fails."""
        self.uri = uri or f"nbd socket (export {export!r})"
        self.export = export
        self._sock = sock
        self._closed = False
        self._broken: NbdError | None = None
        self._pending: dict[int, _Request] = {}
        self._next_handle = 1
        self._header = bytearray(p.CHUNK_OFFSET_HOLE.size)
        self.bytes_read = 0
        try:
            set_timeouts(sock, timeout)
            tune(sock)
            agreed = negotiate(sock, export, meta_contexts, structured=structured_replies)
        except (WireError, p.ProtocolViolation, HandshakeRefused, ValueError, OSError) as err:
            sock.close()
            self._closed = True
            kind = "protocol violation: " if isinstance(err, p.ProtocolViolation) else ""
            raise NbdError(f"{self.uri}: handshake failed: {kind}{err}") from None
        self.size = agreed.size
        self.description = agreed.description
        self.structured_replies = agreed.structured
        self.contexts: dict[str, int] = dict(agreed.contexts)
        self.min_block = agreed.min_block
        self.preferred_block = agreed.preferred_block
        self.max_block = agreed.max_block
        self._request_cap = max(self.min_block, min(self.max_block, p.MAX_BLOCK))
        flags = agreed.flags if agreed.flags & p.FLAG_HAS_FLAGS else 0
        self.transmission_flags = flags
        self.read_only = bool(flags & p.FLAG_READ_ONLY)
        self.can_flush = bool(flags & p.FLAG_SEND_FLUSH)
        self.can_fua = bool(flags & p.FLAG_SEND_FUA)
        self.can_trim = bool(flags & p.FLAG_SEND_TRIM)
        self.can_write_zeroes = bool(flags & p.FLAG_SEND_WRITE_ZEROES)
        self.can_fast_zero = bool(flags & p.FLAG_SEND_FAST_ZERO)
        self.can_multi_conn = bool(flags & p.FLAG_CAN_MULTI_CONN)
        self.can_cache = bool(flags & p.FLAG_SEND_CACHE)

    @classmethod
    def connect(
        cls,
        uri: str,
        *,
        meta_contexts: Sequence[str] = (),
        timeout: float | None = 30.0,
        structured_replies: bool = True,
    ) -> NbdClient:
        """Connect to `uri` (nbd:// or nbd+unix://) and negotiate.

        Contexts the server does not know are simply absent from `contexts`.
        `timeout` bounds the connect and every later wait for the server.
        `structured_replies=False` asks for simple replies only (to test
        servers; block status then is unavailable). Raises UsageError for a
        bad URI, NbdError for everything else.
        """
        address = parse_nbd_uri(uri)
        sock = _open_socket(address, timeout, uri)
        return cls(
            sock,
            export=address.export,
            uri=uri,
            meta_contexts=meta_contexts,
            timeout=timeout,
            structured_replies=structured_replies,
        )

    # --- public operations --------------------------------------------------------------

    def has_context(self, name: str) -> bool:
        """True if the metadata context `name` was negotiated."""
        return name in self.contexts

    def pread(self, length: int, offset: int) -> bytes:
        """`length` bytes at `offset` (holes read as zeroes)."""
        buf = bytearray(length)
        self.pread_into(memoryview(buf), offset)
        return bytes(buf)

    def pread_into(self, buf: memoryview, offset: int) -> None:
        """Fill `buf` with the export's bytes at `offset`: split by the server's maximum
        block size and pipelined; on error the buffer's content is undefined."""
        view = _byte_view(buf)
        self._check_range("read", offset, len(view))
        lead, padded = self._align(offset, len(view))
        if lead or padded != len(view):  # the server wants aligned requests: bounce
            bounce = bytearray(padded)
            self._pipeline(self._read_ops(offset - lead, memoryview(bounce)), 8)
            view[:] = memoryview(bounce)[lead : lead + len(view)]
        else:
            self._pipeline(self._read_ops(offset, view), 8)

    def read_many(
        self, ranges: Iterable[tuple[int, int]], depth: int = 8
    ) -> Iterator[tuple[int, bytearray]]:
        """Read (offset, length) ranges, yielding (offset, data) in request order.

        Up to `depth` requests stay in flight on this connection, and at most
        `depth` ranges are buffered, so memory stays near depth * range size.
        `ranges` is consumed lazily. Between yields the client may be used
        for other requests.
        """
        if depth < 1:
            raise ValueError("depth must be at least 1")
        source = iter(ranges)
        window: deque[_Batch] = deque()
        unsent: deque[tuple[_Batch, int, memoryview]] = deque()
        in_flight = 0
        exhausted = False

        def on_done(req: _Request) -> None:
            nonlocal in_flight
            in_flight -= 1

        while True:
            while in_flight < depth:
                if unsent:
                    batch, off, view = unsent.popleft()
                    req = self._submit(p.CMD_READ, 0, off, len(view), None, view)
                    req.callback = on_done
                    batch.requests.append(req)
                    batch.unsent -= 1
                    in_flight += 1
                elif not exhausted and len(window) < depth:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        continue
                    batch = self._new_batch(*item)
                    window.append(batch)
                    pieces = list(self._pieces(batch.offset - batch.lead, len(batch.data)))
                    data = memoryview(batch.data)
                    base = batch.offset - batch.lead
                    unsent.extend((batch, o, data[o - base : o - base + n]) for o, n in pieces)
                    batch.unsent = len(pieces)
                else:
                    break
            if not window:
                return
            head = window[0]
            waiting = next((r for r in head.requests if not r.done), None)
            if waiting is not None:
                self._settle(waiting)
                continue
            if head.unsent:  # cannot happen: head's pieces go out first
                raise AssertionError("read_many head has unsent pieces and nothing in flight")
            window.popleft()
            for req in head.requests:
                if req.error is not None:
                    raise req.error
            if head.lead or len(head.data) != head.length:
                yield head.offset, head.data[head.lead : head.lead + head.length]
            else:
                yield head.offset, head.data

    def pwrite(self, data: Buffer, offset: int, fua: bool = False) -> None:
        """Write `data` at `offset`; with `fua`, return only once it is on stable storage."""
        self._write_many([(offset, data)], 8, fua)

    def write_many(self, writes: Iterable[tuple[int, Buffer]], depth: int = 8) -> None:
        """Write (offset, data) pairs with up to `depth` requests in flight; raises the
        first error after every request has been answered."""
        self._write_many(writes, depth, False)

    def write_zeroes(self, offset: int, length: int, may_trim: bool = True) -> None:
        """Make [offset, offset+length) read as zeroes: NBD_CMD_WRITE_ZEROES (with
        NO_HOLE unless `may_trim`) if the server has it, else plain writes of zeroes."""
        self._check_writable("write zeroes", offset, length)
        if not self.can_write_zeroes:
            chunk = min(self._request_cap, len(_ZEROS))
            zeros = memoryview(_ZEROS)
            self._write_many(
                (
                    (o, zeros[: min(chunk, offset + length - o)])
                    for o in range(offset, offset + length, chunk)
                ),
                8,
                False,
            )
            return
        flags = 0 if may_trim else p.CMD_FLAG_NO_HOLE
        cap = ZEROES_REQUEST_CAP
        ops = (
            (p.CMD_WRITE_ZEROES, flags, o, min(cap, offset + length - o), None, None)
            for o in range(offset, offset + length, cap)
        )
        self._pipeline(ops, 8)

    def trim(self, offset: int, length: int) -> None:
        """Tell the server [offset, offset+length) is no longer needed (no-op if it
        cannot trim); its content is undefined afterwards."""
        self._check_writable("trim", offset, length)
        if self.can_trim:
            cap = ZEROES_REQUEST_CAP
            ops = (
                (p.CMD_TRIM, 0, o, min(cap, offset + length - o), None, None)
                for o in range(offset, offset + length, cap)
            )
            self._pipeline(ops, 8)

    def flush(self) -> None:
        """Ask the server to make every answered write durable (no-op if it cannot)."""
        if self.can_flush:
            self._pipeline([(p.CMD_FLUSH, 0, 0, 0, None, None)], 1)

    def block_status(self, context: str, offset: int, length: int) -> list[Extent]:
        """Extents of `context` covering exactly [offset, offset+length).

        Asks again until the range is covered (servers may answer a prefix),
        clips the last extent, merges nothing. Raises NbdError if the context
        was not negotiated.
        """
        if context not in self.contexts:
            raise NbdError(f"{self.uri}: metadata context {context!r} was not negotiated")
        self._check_range("block status", offset, length)
        context_id = self.contexts[context]
        out: list[Extent] = []
        pos, end = offset, offset + length
        while pos < end:
            asked = min(end - pos, STATUS_REQUEST_CAP)
            req = self._submit(p.CMD_BLOCK_STATUS, 0, pos, asked, None, None)
            self._settle(req)
            if req.error is not None:
                raise req.error
            extents = req.extents.get(context_id)
            if not extents:
                raise self._violation(f"block status reply has no extents for {context!r}")
            stop = pos + asked
            for ext_len, flags in extents:
                take = min(ext_len, stop - pos)
                out.append(Extent(pos, take, flags))
                pos += take
                if pos >= stop:
                    break
        return out

    def close(self) -> None:
        """Drain requests in flight, send NBD_CMD_DISC and close; idempotent, never raises."""
        if self._closed:
            return
        if self._broken is None:
            try:
                while self._pending:
                    self._receive()
                send(self._sock, [p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_DISC, 0, 0, 0)])
            except (NbdError, WireError):
                pass
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NbdClient({self.uri!r}, size={self.size})"

    # --- request building ----------------------------------------------------------------

    def _check_range(self, what: str, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise UsageError(f"{self.uri}: {what} with a negative offset or length")
        if offset + length > self.size:
            raise NbdError(
                f"{self.uri}: {what} of {length} bytes at {offset} is beyond the end "
                f"of the export ({self.size} bytes)",
                error=p.EINVAL,
            )

    def _check_writable(self, what: str, offset: int, length: int) -> None:
        self._check_range(what, offset, length)
        if self.read_only:
            raise NbdError(f"{self.uri}: {what} refused: the export is read-only", error=p.EPERM)

    def _align(self, offset: int, length: int) -> tuple[int, int]:
        """(bytes to read before `offset`, padded length) honouring the minimum block."""
        block = self.min_block
        if block == 1:
            return 0, length
        lead = offset % block
        end = min(-(-(offset + length) // block) * block, self.size)
        return lead, end - (offset - lead)

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        cap = self._request_cap
        for pos in range(offset, offset + length, cap):
            yield pos, min(cap, offset + length - pos)

    def _read_ops(self, offset: int, view: memoryview) -> Iterator[_Op]:
        for pos, n in self._pieces(offset, len(view)):
            yield p.CMD_READ, 0, pos, n, None, view[pos - offset : pos - offset + n]

    def _new_batch(self, offset: int, length: int) -> _Batch:
        self._check_range("read", offset, length)
        lead, padded = self._align(offset, length)
        return _Batch(offset, length, lead, bytearray(padded))

    def _write_many(self, writes: Iterable[tuple[int, Buffer]], depth: int, fua: bool) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        flags = p.CMD_FLAG_FUA if fua and self.can_fua else 0

        def ops() -> Iterator[_Op]:
            for offset, data in writes:
                view = _byte_view(data)
                self._check_writable("write", offset, len(view))
                for pos, n in self._pieces(offset, len(view)):
                    yield p.CMD_WRITE, flags, pos, n, view[pos - offset : pos - offset + n], None

        self._pipeline(ops(), depth)
        if fua and not self.can_fua:
            self.flush()

    # --- the request/reply engine ---------------------------------------------------------

    def _pipeline(self, ops: Iterable[_Op], depth: int) -> None:
        """Run requests with up to `depth` in flight; after all are answered, raise the
        first server error (the connection stays usable)."""
        in_flight: deque[_Request] = deque()
        first: NbdError | None = None
        for op in ops:
            if len(in_flight) >= depth:
                first = first or self._settle(in_flight.popleft())
            in_flight.append(self._submit(*op))
        while in_flight:
            first = first or self._settle(in_flight.popleft())
        if first is not None:
            raise first

    def _submit(
        self,
        command: int,
        flags: int,
        offset: int,
        length: int,
        payload: memoryview | None,
        view: memoryview | None,
    ) -> _Request:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise NbdError(f"{self.uri}: the connection is closed")
        handle = self._next_handle
        self._next_handle += 1
        req = _Request(handle, command, offset, length, view)
        self._pending[handle] = req
        header = p.REQUEST.pack(p.REQUEST_MAGIC, flags, command, handle, offset, length)
        try:
            send(self._sock, [header] if payload is None else [header, payload])
        except WireError as err:
            raise self._fail(str(err)) from None
        return req

    def _settle(self, req: _Request) -> NbdError | None:
        """Receive replies until `req` is answered; its server error, if any."""
        while not req.done:
            self._receive()
        return req.error

    def _fail(self, reason: str) -> NbdError:
        """Mark the connection dead (every later call raises the same error) and close it."""
        if self._broken is None:
            self._broken = NbdError(f"{self.uri}: {reason}")
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._closed = True
            _log.debug("%s", self._broken)
        return self._broken

    def _violation(self, reason: str) -> NbdError:
        return self._fail(f"protocol violation: {reason}")

    def _recv(self, view: memoryview) -> None:
        if self._broken is not None:
            raise self._broken
        try:
            recv_into(self._sock, view)
        except WireError as err:
            raise self._fail(str(err)) from None

    def _recv_bytes(self, length: int) -> bytearray:
        if self._broken is not None:
            raise self._broken
        try:
            return recv_bytes(self._sock, length)
        except WireError as err:
            raise self._fail(str(err)) from None

    def _receive(self) -> None:
        """Read one simple reply or one structured chunk and apply it to its request."""
        header = memoryview(self._header)
        self._recv(header[: p.SIMPLE_REPLY.size])
        (magic,) = p.U32.unpack_from(header, 0)
        if magic == p.SIMPLE_REPLY_MAGIC:
            _, error, handle = p.SIMPLE_REPLY.unpack_from(header, 0)
            self._simple_reply(self._lookup(handle), error)
        elif magic == p.STRUCTURED_REPLY_MAGIC and self.structured_replies:
            self._recv(header[p.SIMPLE_REPLY.size : p.CHUNK.size])
            _, flags, kind, handle, length = p.CHUNK.unpack_from(header, 0)
            req = self._lookup(handle)
            self._chunk(req, kind, length)
            if flags & p.REPLY_FLAG_DONE:
                self._finish(req)
            elif kind == p.REPLY_TYPE_NONE:
                raise self._violation("NBD_REPLY_TYPE_NONE without the DONE flag")
        else:
            raise self._violation(f"bad reply magic {magic:#x}")

    def _lookup(self, handle: int) -> _Request:
        req = self._pending.get(handle)
        if req is None:
            raise self._violation(f"reply for unknown handle {handle}")
        return req

    def _simple_reply(self, req: _Request, error: int) -> None:
        if error:
            req.error = self._server_error(req, error, "")
        elif req.command == p.CMD_READ:
            if self.structured_replies:
                raise self._violation("simple reply with data to a read")
            assert req.view is not None
            self._recv(req.view)
            self.bytes_read += req.length
            req.filled = req.length
        elif req.command == p.CMD_BLOCK_STATUS:
            raise self._violation("simple reply to block status")
        self._finish(req)

    def _chunk(self, req: _Request, kind: int, length: int) -> None:
        if kind == p.REPLY_TYPE_OFFSET_DATA and req.command == p.CMD_READ:
            if length < 9:
                raise self._violation(f"data chunk of length {length}")
            head = memoryview(self._header)[p.CHUNK.size : p.CHUNK.size + 8]
            self._recv(head)
            (offset,) = p.U64.unpack_from(head, 0)
            start = self._claim(req, offset, length - 8)
            assert req.view is not None
            self._recv(req.view[start : start + length - 8])
            self.bytes_read += length - 8
        elif kind == p.REPLY_TYPE_OFFSET_HOLE and req.command == p.CMD_READ:
            if length != 12:
                raise self._violation(f"hole chunk of length {length}")
            head = memoryview(self._header)[p.CHUNK.size : p.CHUNK.size + 12]
            self._recv(head)
            offset, size = p.U64.unpack_from(head, 0)[0], p.U32.unpack_from(head, 8)[0]
            if size == 0:
                raise self._violation("hole chunk of size 0")
            start = self._claim(req, offset, size)
            assert req.view is not None
            for pos in range(start, start + size, len(_ZEROS)):
                n = min(len(_ZEROS), start + size - pos)
                req.view[pos : pos + n] = _ZEROS[:n]
        elif kind == p.REPLY_TYPE_BLOCK_STATUS and req.command == p.CMD_BLOCK_STATUS:
            if length > MAX_STATUS_PAYLOAD:
                raise self._violation(f"block status chunk of {length} bytes")
            try:
                context_id, extents = p.decode_extents(self._recv_bytes(length))
            except p.ProtocolViolation as err:
                raise self._violation(str(err)) from None
            if context_id not in self.contexts.values():
                raise self._violation(f"block status for unknown context id {context_id}")
            if context_id in req.extents:
                raise self._violation(f"two block status chunks for context id {context_id}")
            req.extents[context_id] = extents
        elif kind & p.REPLY_TYPE_ERROR_BIT:
            if length > MAX_ERROR_PAYLOAD:
                raise self._violation(f"error chunk of {length} bytes")
            try:
                code, message, offset = p.decode_error_payload(kind, self._recv_bytes(length))
            except p.ProtocolViolation as err:
                raise self._violation(str(err)) from None
            if offset is not None and not req.offset <= offset < req.offset + max(req.length, 1):
                raise self._violation(f"error offset {offset} outside the request")
            if req.error is None:
                req.error = self._server_error(req, code, message)
        elif kind == p.REPLY_TYPE_NONE:
            if length:
                raise self._violation("NBD_REPLY_TYPE_NONE with a payload")
        else:
            raise self._violation(f"unexpected chunk type {kind} for command {req.command}")

    def _claim(self, req: _Request, offset: int, size: int) -> int:
        """Check a content chunk lies inside `req` and overlaps nothing; its start in req.view."""
        start = offset - req.offset
        if start < 0 or start + size > req.length:
            raise self._violation(
                f"chunk {offset}+{size} outside the read {req.offset}+{req.length}"
            )
        covered = req.covered
        i = bisect.bisect_left(covered, (start, start + size))
        if (i > 0 and covered[i - 1][1] > start) or (
            i < len(covered) and covered[i][0] < start + size
        ):
            raise self._violation(f"chunk {offset}+{size} overlaps an earlier chunk")
        covered.insert(i, (start, start + size))
        req.filled += size
        return start

    def _finish(self, req: _Request) -> None:
        if req.command == p.CMD_READ and req.error is None and req.filled != req.length:
            raise self._violation(
                f"read {req.offset}+{req.length} ended with only {req.filled} bytes"
            )
        del self._pending[req.handle]
        req.done = True
        if req.callback is not None:
            req.callback(req)

    def _server_error(self, req: _Request, code: int, message: str) -> NbdError:
        names = {
            p.CMD_READ: "read",
            p.CMD_WRITE: "write",
            p.CMD_FLUSH: "flush",
            p.CMD_TRIM: "trim",
            p.CMD_WRITE_ZEROES: "write zeroes",
            p.CMD_BLOCK_STATUS: "block status",
        }
        what = names.get(req.command, f"command {req.command}")
        detail = f" ({message})" if message else ""
        return NbdError(
            f"{self.uri}: {what} of {req.length} bytes at {req.offset} failed: "
            f"{p.error_name(code)}{detail}",
            error=code,
        )
