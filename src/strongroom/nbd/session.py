"""One server-side NBD connection: the handshake, then the request loop.

Three kinds of thread serve a connection. The connection's own thread reads
requests; reads and block status queries go to the server's shared, fair
worker pool (`pool.FairPool`); the pool's jobs hand their finished replies to
the connection's sender thread, the only one that writes replies to the
socket (each reply whole, under the send lock). So a client that stops
reading blocks only its own sender, never a pool worker: its other requests
still finish, and every other client is served.

A budget bounds what one connection may have outstanding (requests and reply
bytes, queued, executing or unsent): beyond it the reader stops reading the
socket, and TCP back-pressure holds the client, however many requests it
pipelines. A reply send that makes no progress for the client timeout drops
the client, and so does a handshake that is not over within it. Exports are
served read-only.

Anything malformed that cannot be answered (bad magic, an oversized option
or write) drops the connection; anything answerable gets an error reply.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from strongroom.errors import StrongroomError
from strongroom.nbd import protocol as p
from strongroom.nbd.exports import Export, clip_extents
from strongroom.nbd.limits import Budget, ServerLimits
from strongroom.nbd.pool import FairPool, PoolClosed
from strongroom.nbd.wire import (
    Buffer,
    WireError,
    arm,
    discard,
    recv_bytes,
    recv_into,
    send,
    set_timeouts,
)

_log = logging.getLogger(__name__)

MAX_OPTION_DATA = 1 << 16  # strings are at most 4 KiB; anything this big is hostile
MAX_EXTENTS_PER_REPLY = 1 << 16
STATUS_COST = 8 * MAX_EXTENTS_PER_REPLY  # what one block status reply may hold, at most
IOV_BATCH = 512  # below IOV_MAX (1024) per sendmsg
BASE_ALLOCATION_ID = 1
TRANSMISSION_FLAGS = p.FLAG_HAS_FLAGS | p.FLAG_READ_ONLY | p.FLAG_SEND_FLUSH | p.FLAG_CAN_MULTI_CONN
KNOWN_CMD_FLAGS = (
    p.CMD_FLAG_FUA | p.CMD_FLAG_NO_HOLE | p.CMD_FLAG_DF | p.CMD_FLAG_REQ_ONE | p.CMD_FLAG_FAST_ZERO
)


@dataclass(frozen=True)
class ServerContext:
    """What every connection shares: exports, the pool, limits and statistics hooks."""

    exports: Mapping[str, Export]
    default_export: str | None
    pool: FairPool
    preferred_block: int
    limits: ServerLimits
    count_served: Callable[[int], None]
    total: Budget  # reply bytes held for all clients together

    def resolve(self, name: str) -> tuple[str, Export] | None:
        if name in self.exports:
            return name, self.exports[name]
        if name == "" and self.default_export is not None:
            return self.default_export, self.exports[self.default_export]
        return None


class _Drop(Exception):
    """The client broke a rule that leaves no way to answer: close the connection."""


# A finished reply on its way to the sender: parts, budget cost, bytes served.
_Outgoing = tuple[list[Buffer], int, int]


class Session:
    """Serves one accepted connection until the client leaves or the socket dies."""

    def __init__(self, ctx: ServerContext, sock: socket.socket, peer: str) -> None:
        self._ctx = ctx
        self._sock = sock
        self.peer = peer
        self._send_lock = threading.Lock()
        self._dead = False
        limits = ctx.limits
        self._budget = Budget(limits.max_requests, limits.max_bytes)
        self._outbox: queue.SimpleQueue[_Outgoing | None] = queue.SimpleQueue()
        self._deadline: float | None = None  # of the handshake
        self._no_zeroes = False
        self._structured = False
        self._contexts: dict[int, str] = {}  # selected metadata contexts by id
        self._contexts_export: str | None = None

    def run(self) -> None:
        """Handshake and serve; never raises (errors are logged, the socket closed).

        After NBD_CMD_DISC or end of input, requests in flight are still
        answered before the socket closes; after an error they are cut short.
        """
        limits = self._ctx.limits
        try:
            if limits.client_timeout is not None:
                self._deadline = time.monotonic() + limits.client_timeout
            chosen = self._handshake()
            if chosen is not None:
                self._deadline = None
                set_timeouts(self._sock, limits.idle_timeout, limits.client_timeout)
                self._transmission(*chosen)
        except (WireError, _Drop, p.ProtocolViolation) as err:
            _log.debug("nbd connection from %s ended: %s", self.peer, err)
            self.abort()
        except Exception:
            _log.exception("nbd connection from %s failed", self.peer)
            self.abort()
        finally:
            self.close()

    def close(self) -> None:
        """Shut the socket down (wakes this session's threads) and close it."""
        with self._send_lock:
            self._dead = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def abort(self) -> None:
        """From any thread: make the session end soon (server shutdown, a broken
        client); replies not yet sent are dropped, reads not yet started skipped."""
        self._dead = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- handshake I/O: all of it within one deadline ------------------------------------

    def _recv(self, length: int) -> bytearray:
        return recv_bytes(self._sock, length, self._deadline)

    def _hs_send(self, data: bytes) -> None:
        if self._deadline is not None:
            arm(self._sock, self._deadline)
        send(self._sock, [data])

    # --- handshake -------------------------------------------------------------------------

    def _handshake(self) -> tuple[str, Export] | None:
        hflags = p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES
        self._hs_send(p.GREETING.pack(p.NBDMAGIC, p.IHAVEOPT, hflags))
        (cflags,) = p.U32.unpack(self._recv(4))
        if cflags & ~(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES):
            raise _Drop(f"unknown client flags {cflags:#x}")
        self._no_zeroes = bool(cflags & p.FLAG_C_NO_ZEROES)
        while True:
            magic, option, length = p.OPTION.unpack(self._recv(p.OPTION.size))
            if magic != p.IHAVEOPT:
                raise _Drop(f"bad option magic {magic:#x}")
            if length > MAX_OPTION_DATA:
                raise _Drop(f"option {option} with {length} bytes of data")
            data = bytes(self._recv(length))
            if option == p.OPT_EXPORT_NAME:
                return self._export_name(data)
            if option == p.OPT_ABORT:
                self._opt_reply(option, p.REP_ACK)
                return None
            handler = self._option_handlers().get(option)
            if handler is None:
                self._opt_reply(option, p.REP_ERR_UNSUP, b"option not supported")
                continue
            try:
                chosen = handler(option, data)
            except p.ProtocolViolation as err:
                self._opt_reply(option, p.REP_ERR_INVALID, str(err).encode())
                continue
            if chosen is not None:
                return chosen

    def _option_handlers(
        self,
    ) -> dict[int, Callable[[int, bytes], tuple[str, Export] | None]]:
        return {
            p.OPT_LIST: self._opt_list,
            p.OPT_INFO: self._opt_info,
            p.OPT_GO: self._opt_info,
            p.OPT_STRUCTURED_REPLY: self._opt_structured_reply,
            p.OPT_LIST_META_CONTEXT: self._opt_meta_context,
            p.OPT_SET_META_CONTEXT: self._opt_meta_context,
        }

    def _opt_reply(self, option: int, reply_type: int, data: bytes = b"") -> None:
        self._hs_send(p.encode_option_reply(option, reply_type, data))

    def _export_name(self, data: bytes) -> tuple[str, Export]:
        chosen = self._ctx.resolve(p.decode_string(data))
        if chosen is None:
            raise _Drop("NBD_OPT_EXPORT_NAME for an unknown export")
        self._enter(chosen[0])
        reply = p.EXPORT_NAME_REPLY.pack(chosen[1].size, TRANSMISSION_FLAGS)
        self._hs_send(reply + (b"" if self._no_zeroes else bytes(p.ZERO_PAD)))
        return chosen

    def _opt_list(self, option: int, data: bytes) -> None:
        if data:
            raise p.ProtocolViolation("NBD_OPT_LIST takes no data")
        for name, export in self._ctx.exports.items():
            self._opt_reply(option, p.REP_SERVER, p.encode_server_reply(name, export.description))
        self._opt_reply(option, p.REP_ACK)

    def _opt_info(self, option: int, data: bytes) -> tuple[str, Export] | None:
        name, infos = p.decode_info_request(data)
        chosen = self._ctx.resolve(name)
        if chosen is None:
            self._opt_reply(option, p.REP_ERR_UNKNOWN, f"no export named {name!r}".encode())
            return None
        canonical, export = chosen
        self._opt_reply(
            option,
            p.REP_INFO,
            p.INFO_EXPORT_DATA.pack(p.INFO_EXPORT, export.size, TRANSMISSION_FLAGS),
        )
        if p.INFO_NAME in infos:
            self._opt_reply(option, p.REP_INFO, p.U16.pack(p.INFO_NAME) + canonical.encode())
        if p.INFO_DESCRIPTION in infos and export.description:
            text = p.clean_string(export.description)
            self._opt_reply(option, p.REP_INFO, p.U16.pack(p.INFO_DESCRIPTION) + text)
        sizes = p.INFO_BLOCK_SIZE_DATA.pack(
            p.INFO_BLOCK_SIZE, 1, self._ctx.preferred_block, p.MAX_BLOCK
        )
        self._opt_reply(option, p.REP_INFO, sizes)
        self._opt_reply(option, p.REP_ACK)
        if option == p.OPT_GO:
            self._enter(canonical)
            return chosen
        return None

    def _opt_structured_reply(self, option: int, data: bytes) -> None:
        if data:
            raise p.ProtocolViolation("NBD_OPT_STRUCTURED_REPLY takes no data")
        if self._structured:
            raise p.ProtocolViolation("structured replies were already negotiated")
        self._structured = True
        self._opt_reply(option, p.REP_ACK)

    def _opt_meta_context(self, option: int, data: bytes) -> None:
        if not self._structured:
            raise p.ProtocolViolation("negotiate structured replies first")
        name, queries = p.decode_meta_context_request(data)
        chosen = self._ctx.resolve(name)
        if chosen is None:
            self._opt_reply(option, p.REP_ERR_UNKNOWN, f"no export named {name!r}".encode())
            return
        listing = option == p.OPT_LIST_META_CONTEXT
        wanted = {p.CONTEXT_BASE_ALLOCATION} if listing else set()
        if queries:
            base = {p.CONTEXT_BASE_ALLOCATION, "base:"} if listing else {p.CONTEXT_BASE_ALLOCATION}
            wanted = {p.CONTEXT_BASE_ALLOCATION} if base & set(queries) else set()
        if not listing:
            self._contexts = {BASE_ALLOCATION_ID: p.CONTEXT_BASE_ALLOCATION} if wanted else {}
            self._contexts_export = chosen[0]
        for context in sorted(wanted):
            context_id = 0 if listing else BASE_ALLOCATION_ID
            self._opt_reply(option, p.REP_META_CONTEXT, p.U32.pack(context_id) + context.encode())
        self._opt_reply(option, p.REP_ACK)

    def _enter(self, export_name: str) -> None:
        """Contexts chosen for another export do not carry over (as in qemu)."""
        if self._contexts_export != export_name:
            self._contexts = {}

    # --- transmission -------------------------------------------------------------------------

    def _transmission(self, name: str, export: Export) -> None:
        sender = threading.Thread(target=self._send_loop, name="nbd-send", daemon=True)
        sender.start()
        try:
            self._read_requests(export)
        except BaseException:
            self.abort()  # cut the replies in flight short rather than wait for the client
            raise
        finally:
            self._budget.wait_idle()  # every reply sent, or dropped with the connection
            self._outbox.put(None)
            sender.join()

    def _read_requests(self, export: Export) -> None:
        header = bytearray(p.REQUEST.size)
        view = memoryview(header)
        size = export.size
        while True:
            try:
                recv_into(self._sock, view)
            except WireError:
                return  # the client left without NBD_CMD_DISC, went idle, or we shut down
            magic, flags, command, handle, offset, length = p.REQUEST.unpack(header)
            if magic != p.REQUEST_MAGIC:
                raise _Drop(f"bad request magic {magic:#x}")
            if command == p.CMD_DISC:
                return
            if command == p.CMD_WRITE:
                if length > p.MAX_BLOCK:
                    raise _Drop(f"write of {length} bytes")
                discard(self._sock, length)
                self._reply_now(self._error_reply(handle, p.EPERM, "the export is read-only"))
                continue
            error = self._check(command, flags, offset, length, size)
            if error is not None:
                self._reply_now(self._error_reply(handle, *error))
            elif command == p.CMD_FLUSH:
                self._reply_now([p.encode_simple_reply(handle)])
            else:
                cost = length if command == p.CMD_READ else STATUS_COST
                self._acquire(cost)  # blocks: the client's socket is not read meanwhile
                if self._dead:
                    self._release(cost)
                    return
                job = self._job(command, flags, handle, offset, length, export, cost)
                try:
                    self._ctx.pool.submit(self, job)
                except PoolClosed:
                    self._release(cost)
                    self._reply_now(
                        self._error_reply(handle, p.ESHUTDOWN, "the server is shutting down")
                    )
                    return

    def _reply_now(self, parts: list[Buffer]) -> None:
        """A reply the reader makes itself, queued behind the pool's replies; costs a
        request slot of the budget like any other, so error replies cannot pile up."""
        self._acquire(0)
        self._post(parts, 0, 0)

    def _acquire(self, cost: int) -> None:
        """This client's budget first, then the server's: a client waiting for the
        server's budget holds none of it."""
        self._budget.acquire(cost)
        self._ctx.total.acquire(cost)

    def _release(self, cost: int) -> None:
        self._ctx.total.release(cost)
        self._budget.release(cost)

    def _post(self, parts: list[Buffer], cost: int, served: int) -> None:
        """Hand a finished reply to the sender; it releases `cost` once sent or dropped."""
        self._outbox.put((parts, cost, served))

    def _send_loop(self) -> None:
        """The sender thread: the only writer of replies. A send that makes no progress
        for the client timeout kills the connection; replies after that are dropped
        (their budget released) so the reader and the pool jobs can finish."""
        while True:
            item = self._outbox.get()
            if item is None:
                return
            parts, cost, served = item
            try:
                if self._send(parts) and served:
                    self._ctx.count_served(served)
            finally:
                self._release(cost)

    def _check(
        self, command: int, flags: int, offset: int, length: int, size: int
    ) -> tuple[int, str] | None:
        """(error, message) for a request that cannot be served, else None."""
        if command in (p.CMD_TRIM, p.CMD_WRITE_ZEROES):
            return p.EPERM, "the export is read-only"
        if command not in (p.CMD_READ, p.CMD_FLUSH, p.CMD_BLOCK_STATUS):
            return p.EINVAL, f"unsupported command {command}"
        if flags & ~KNOWN_CMD_FLAGS:
            return p.EINVAL, f"unknown command flags {flags:#x}"
        if command == p.CMD_FLUSH:
            return None
        if command == p.CMD_READ and length > p.MAX_BLOCK:
            # checked before anything is allocated; EOVERFLOW is for structured replies only
            code = p.EOVERFLOW if self._structured else p.EINVAL
            return code, f"read of {length} bytes exceeds the maximum {p.MAX_BLOCK}"
        if offset + length > size:
            return p.EINVAL, f"request {offset}+{length} beyond the end ({size} bytes)"
        if command == p.CMD_BLOCK_STATUS:
            if not self._contexts:
                return p.EINVAL, "no metadata context was negotiated"
            if length == 0:
                return p.EINVAL, "block status of length 0"
        return None

    def _job(
        self,
        command: int,
        flags: int,
        handle: int,
        offset: int,
        length: int,
        export: Export,
        cost: int,
    ) -> Callable[[], None]:
        """A pool job answering one read or block status: it builds the reply and posts
        it to the sender, never touching the socket; it never raises (a failure here
        is a bug of ours: the connection is dropped, the server goes on)."""

        def job() -> None:
            parts: list[Buffer] = []
            served = 0
            try:
                if self._dead:
                    pass  # the connection is gone: no need to read for it
                elif command == p.CMD_READ:
                    parts, served = self._serve_read(handle, offset, length, export)
                else:
                    parts = self._serve_status(handle, flags, offset, length, export)
            except Exception:
                _log.exception("nbd request from %s failed", self.peer)
                self.abort()
                parts = []
            finally:
                self._post(parts, cost, served)

        return job

    def _serve_read(
        self, handle: int, offset: int, length: int, export: Export
    ) -> tuple[list[Buffer], int]:
        """The reply to a read and the export bytes it answers (0 for an error reply)."""
        try:
            if not self._structured:
                data = _read_exact(export, offset, length)
                return [p.encode_simple_reply(handle), data], length
            return self._read_chunks(handle, offset, length, export), length
        except Exception as err:  # an export's failure, even a bug, is this request's EIO
            _export_failed(f"read {offset}+{length}", export, err)
            return self._error_reply(handle, p.EIO, f"read failed: {err}"), 0

    def _read_chunks(self, handle: int, offset: int, length: int, export: Export) -> list[Buffer]:
        """Structured reply parts: OFFSET_DATA for data, OFFSET_HOLE for holes."""
        if length == 0:
            return [p.encode_chunk_header(handle, p.REPLY_TYPE_NONE, 0, done=True)]
        try:
            segments = clip_extents(export.extents(offset, length), offset, length)
        except Exception as err:
            _export_failed(f"extents {offset}+{length} (reading instead)", export, err)
            segments = [(offset, length, False)]
        parts: list[Buffer] = []
        last = len(segments) - 1
        for i, (start, size, hole) in enumerate(segments):
            done = i == last
            if hole:
                parts.append(p.encode_hole_chunk(handle, start, size, done=done))
            else:
                data = _read_exact(export, start, size)
                parts.append(p.encode_data_chunk_header(handle, start, size, done=done))
                parts.append(data)
        return parts

    def _serve_status(
        self, handle: int, flags: int, offset: int, length: int, export: Export
    ) -> list[Buffer]:
        try:
            segments = clip_extents(export.extents(offset, length), offset, length)
        except Exception as err:
            _export_failed(f"extents {offset}+{length}", export, err)
            return self._error_reply(handle, p.EIO, f"block status failed: {err}")
        limit = 1 if flags & p.CMD_FLAG_REQ_ONE else MAX_EXTENTS_PER_REPLY
        pairs = [
            (size, p.STATE_HOLE | p.STATE_ZERO if hole else 0) for _, size, hole in segments[:limit]
        ]
        parts: list[Buffer] = []
        for context_id in sorted(self._contexts):
            payload = p.encode_extents(context_id, pairs)
            last = context_id == max(self._contexts)
            parts.append(
                p.encode_chunk_header(handle, p.REPLY_TYPE_BLOCK_STATUS, len(payload), done=last)
            )
            parts.append(payload)
        return parts

    def _error_reply(self, handle: int, code: int, message: str) -> list[Buffer]:
        if self._structured:
            return [p.encode_error_chunk(handle, code, message)]
        return [p.encode_simple_reply(handle, code)]

    def _send(self, parts: list[Buffer]) -> bool:
        """Send one whole reply; False (and the connection is shut) if the socket failed
        or a send made no progress for the client timeout (SO_SNDTIMEO)."""
        if not parts:
            return False
        with self._send_lock:
            if self._dead:
                return False
            try:
                for i in range(0, len(parts), IOV_BATCH):
                    send(self._sock, parts[i : i + IOV_BATCH])
            except WireError as err:
                _log.debug("nbd connection from %s: %s", self.peer, err)
                self._dead = True
                self.abort()
                return False
        return True


def _export_failed(what: str, export: Export, err: Exception) -> None:
    """Log an export's failure: expected kinds briefly, anything else with its traceback."""
    if isinstance(err, (OSError, StrongroomError, ValueError)):
        _log.warning("nbd %s of %r failed: %s", what, export.name, err)
    else:
        _log.error("nbd %s of %r failed (a bug?)", what, export.name, exc_info=err)


def _read_exact(export: Export, offset: int, length: int) -> Buffer:
    data = export.read(offset, length)
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size != length:
        raise ValueError(f"export returned {size} bytes for a read of {length}")
    return data


def peer_name(sock: socket.socket) -> str:
    """'host:port' or 'unix' for log lines."""
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return "unix"
