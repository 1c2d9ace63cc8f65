"""A pipelined NBD client: reads, writes and block status over one connection.

Thread safety: an `NbdClient` is used by one thread at a time (it owns one
socket and one table of requests in flight). For parallelism open several
clients (when the server sets `can_multi_conn`) or pipeline with `read_many`.

This module turns calls into requests: it checks ranges, splits by the
server's block sizes and keeps several requests in flight; `transport`
matches and checks the replies. A protocol violation or socket failure closes
the connection and raises `NbdError`; a server's error reply raises
`NbdError` with `error` set and leaves the connection usable. Socket timeouts
(default 30 s) bound every wait, and payload sizes are checked before
anything is allocated, so a hostile or hung server can neither hang the
client nor make it allocate without bound.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

from strongroom.errors import UsageError
from strongroom.nbd import protocol as p
from strongroom.nbd.negotiate import HandshakeRefused, negotiate
from strongroom.nbd.transport import NbdError, Request, Transport
from strongroom.nbd.uri import NbdAddress, parse_nbd_uri
from strongroom.nbd.wire import Buffer, WireError, set_timeouts, tune

__all__ = ["Extent", "NbdClient", "NbdError"]

STATUS_REQUEST_CAP = (1 << 32) - (1 << 20)  # lengths are 32 bits; stay 1 MiB aligned
ZEROES_REQUEST_CAP = 1 << 30
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True)
class Extent:
    """One block status descriptor: `flags` as defined by its metadata context."""

    offset: int
    length: int
    flags: int


class _Batch:
    """One range of `read_many`: its buffer and the requests that fill it."""

    __slots__ = ("data", "lead", "length", "offset", "requests", "unsent")

    def __init__(self, offset: int, length: int, lead: int, data: bytearray) -> None:
        self.offset = offset
        self.length = length
        self.lead = lead  # bytes before `offset` read only to honour the minimum block size
        self.data = data
        self.requests: list[Request] = []
        self.unsent = 0


class _Op(NamedTuple):
    """One request to pipeline: the arguments of `Transport.submit`."""

    command: int
    flags: int
    offset: int
    length: int
    payload: memoryview | None  # sent after the header (writes)
    into: memoryview | None  # the reply's data lands here (reads)


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
        try:
            set_timeouts(sock, timeout)
            tune(sock)
            agreed = negotiate(sock, export, meta_contexts, structured=structured_replies)
        except (WireError, p.ProtocolViolation, HandshakeRefused, ValueError, OSError) as err:
            sock.close()
            kind = "protocol violation: " if isinstance(err, p.ProtocolViolation) else ""
            raise NbdError(f"{self.uri}: handshake failed: {kind}{err}") from None
        self.size = agreed.size
        self.description = agreed.description
        self.structured_replies = agreed.structured
        self.contexts: dict[str, int] = dict(agreed.contexts)
        self.min_block = agreed.min_block
        self.preferred_block = agreed.preferred_block
        self.max_block = agreed.max_block
        # Requests are whole minimum blocks and at most 32 MiB, whatever the server allows.
        cap = min(self.max_block, p.MAX_BLOCK)
        self._request_cap = max(self.min_block, cap - cap % self.min_block)
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
        self._transport = Transport(
            sock, self.uri, agreed.structured, set(agreed.contexts.values())
        )

    @property
    def bytes_read(self) -> int:
        """Data bytes received by reads on this connection; holes the server sent as
        NBD_REPLY_TYPE_OFFSET_HOLE carry no data and do not count."""
        return self._transport.bytes_read

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
        `timeout` bounds the connect and every later wait for the server
        (None or 0: wait forever).
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

        def on_done(req: Request) -> None:
            nonlocal in_flight
            in_flight -= 1

        while True:
            while in_flight < depth:
                if unsent:
                    batch, off, view = unsent.popleft()
                    req = self._transport.submit(p.CMD_READ, 0, off, len(view), None, view)
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
                self._transport.settle(waiting)
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
            _Op(p.CMD_WRITE_ZEROES, flags, o, min(cap, offset + length - o), None, None)
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
                _Op(p.CMD_TRIM, 0, o, min(cap, offset + length - o), None, None)
                for o in range(offset, offset + length, cap)
            )
            self._pipeline(ops, 8)

    def flush(self) -> None:
        """Ask the server to make every answered write durable (no-op if it cannot)."""
        if self.can_flush:
            self._pipeline([_Op(p.CMD_FLUSH, 0, 0, 0, None, None)], 1)

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
            req = self._transport.submit(p.CMD_BLOCK_STATUS, 0, pos, asked, None, None)
            self._transport.settle(req)
            if req.error is not None:
                raise req.error
            extents = req.extents.get(context_id)
            if not extents:
                raise self._transport.violation(
                    f"block status reply has no extents for {context!r}"
                )
            stop = pos + asked
            for ext_len, flags in extents:
                take = min(ext_len, stop - pos)
                out.append(Extent(pos, take, flags))
                pos += take
                if pos >= stop:
                    break
        return out

    def close(self) -> None:
        """Answer requests in flight, send NBD_CMD_DISC and close; idempotent, never raises."""
        self._transport.close()

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
            yield _Op(p.CMD_READ, 0, pos, n, None, view[pos - offset : pos - offset + n])

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
                    piece = view[pos - offset : pos - offset + n]
                    yield _Op(p.CMD_WRITE, flags, pos, n, piece, None)

        self._pipeline(ops(), depth)
        if fua and not self.can_fua:
            self.flush()

    # --- pipelining ------------------------------------------------------------------------

    def _pipeline(self, ops: Iterable[_Op], depth: int) -> None:
        """Run requests with up to `depth` in flight; after all are answered, raise the
        first server error (the connection stays usable)."""
        in_flight: deque[Request] = deque()
        first: NbdError | None = None
        for op in ops:
            if len(in_flight) >= depth:
                first = first or self._transport.settle(in_flight.popleft())
            in_flight.append(self._transport.submit(*op))
        while in_flight:
            first = first or self._transport.settle(in_flight.popleft())
        if first is not None:
            raise first
