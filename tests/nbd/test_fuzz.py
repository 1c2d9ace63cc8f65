"""Hostile peers: random and half-valid bytes must end in NbdError (client) or a
closed connection (server), never a hang, an unbounded allocation or another
exception. Each side talks to a scripted peer over a socketpair."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from strongroom.nbd import protocol as p
from strongroom.nbd.client import Extent, NbdClient, NbdError
from strongroom.nbd.exports import MemoryExport
from strongroom.nbd.server import NbdServer, ServerLimits

EXPORT_SIZE = 65536
FUZZ = settings(max_examples=150)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)


def _reply(option: int, kind: int, data: bytes = b"") -> bytes:
    return p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, option, kind, len(data)) + data


GREETING = p.GREETING.pack(p.NBDMAGIC, p.IHAVEOPT, p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES)
EXPORT_INFO = p.INFO_EXPORT_DATA.pack(p.INFO_EXPORT, EXPORT_SIZE, p.FLAG_HAS_FLAGS)
GOOD_HANDSHAKE = (
    GREETING
    + _reply(p.OPT_STRUCTURED_REPLY, p.REP_ACK)
    + _reply(p.OPT_SET_META_CONTEXT, p.REP_META_CONTEXT, p.U32.pack(1) + b"base:allocation")
    + _reply(p.OPT_SET_META_CONTEXT, p.REP_ACK)
    + _reply(p.OPT_GO, p.REP_INFO, EXPORT_INFO)
    + _reply(p.OPT_GO, p.REP_ACK)
)
SIMPLE_HANDSHAKE = (
    GREETING
    + _reply(p.OPT_STRUCTURED_REPLY, p.REP_ERR_UNSUP)
    + _reply(p.OPT_GO, p.REP_INFO, EXPORT_INFO)
    + _reply(p.OPT_GO, p.REP_ACK)
)


# --- the client against a scripted server ------------------------------------------------


def _feed(peer: socket.socket, script: bytes) -> None:
    """Play the server: send the script, then end of file; drain what the client says."""
    try:
        peer.sendall(script)
        peer.shutdown(socket.SHUT_WR)
        while peer.recv(65536):
            pass
    except OSError:
        pass  # the client hung up first: fine
    finally:
        peer.close()


def _client_session(script: bytes, work: bool) -> None:
    """Handshake (and optionally some requests) against `script`: NbdError or success."""
    ours, peer = socket.socketpair()
    feeder = threading.Thread(target=_feed, args=(peer, script), daemon=True)
    feeder.start()
    started = time.monotonic()
    try:
        client = NbdClient(ours, meta_contexts=["base:allocation"], timeout=5)
    except NbdError:
        client = None
    if client is not None:
        try:
            if work:
                for operation in (
                    lambda: client.pread(4096, 0),
                    lambda: client.block_status("base:allocation", 0, 8192),
                    lambda: list(client.read_many([(0, 100), (200, 100)])),
                    client.flush,
                ):
                    try:
                        operation()
                    except NbdError:
                        pass
        finally:
            client.close()
    feeder.join(5)
    assert not feeder.is_alive()
    assert time.monotonic() - started < 4, "the client waited for a timeout"


@FUZZ
@given(st.binary(max_size=300))
def test_client_handshake_random_bytes(script: bytes) -> None:
    _client_session(script, work=False)


option_replies = st.lists(
    st.builds(
        lambda opt, kind, data, lie: (
            p.OPTION_REPLY.pack(
                p.OPTION_REPLY_MAGIC, opt, kind, lie if lie is not None else len(data)
            )
            + data
        ),
        st.sampled_from([p.OPT_STRUCTURED_REPLY, p.OPT_SET_META_CONTEXT, p.OPT_GO]) | u32,
        st.sampled_from([p.REP_ACK, p.REP_INFO, p.REP_META_CONTEXT, p.REP_ERR_UNSUP]) | u32,
        st.sampled_from([EXPORT_INFO, b"\0\3" + bytes(12), b"\0\3\0\0\2\0" + bytes(8)])
        | st.binary(max_size=40),
        st.none() | u32,
    ),
    max_size=8,
)


@FUZZ
@given(option_replies)
def test_client_handshake_option_replies(replies: list[bytes]) -> None:
    _client_session(GREETING + b"".join(replies), work=True)


def _chunk(flags: int, kind: int, handle: int, payload: bytes, lie: int | None) -> bytes:
    """A structured reply chunk; `lie` replaces the true payload length in the header."""
    length = len(payload) if lie is None else lie
    return p.CHUNK.pack(p.STRUCTURED_REPLY_MAGIC, flags, kind, handle, length) + payload


@dataclass(frozen=True)
class Reply:
    """One scripted reply, rendered against the request it answers.

    Fields left None take the value that fits that request (its handle, DONE on the
    last reply of a group, data up to the request's end), so most replies get past
    the first checks and reach the deep ones; the strategies set them wrong at times.
    """

    kind: str  # data, hole, status, error, chunk (any type), simple, junk
    flags: int | None = None
    handle: int | None = None
    rel: int = 0  # offset relative to the request
    size: int | None = None
    lie: int | None = None  # a header length that disagrees with the payload
    code: int = 0  # error value, context id, or chunk type
    blob: bytes = b""  # message, payload or junk
    extents: tuple[tuple[int, int], ...] = ()

    def render(self, handle: int, offset: int, length: int, last: bool) -> bytes:
        if self.kind == "junk":
            return self.blob
        handle = handle if self.handle is None else self.handle
        size = max(length - self.rel, 0) if self.size is None else self.size
        where = p.U64.pack((offset + self.rel) % 2**64)
        if self.kind == "simple":
            return p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, self.code, handle) + bytes(size)
        flags = (p.REPLY_FLAG_DONE if last else 0) if self.flags is None else self.flags
        kind, payload = {
            "data": lambda: (p.REPLY_TYPE_OFFSET_DATA, where + bytes(size)),
            "hole": lambda: (p.REPLY_TYPE_OFFSET_HOLE, where + p.U32.pack(size)),
            "status": lambda: (
                p.REPLY_TYPE_BLOCK_STATUS,
                p.U32.pack(self.code) + b"".join(p.EXTENT.pack(n, f) for n, f in self.extents),
            ),
            "error": lambda: (
                p.REPLY_TYPE_ERROR if self.size is None else p.REPLY_TYPE_ERROR_OFFSET,
                p.ERROR_HEAD.pack(self.code, len(self.blob))
                + self.blob
                + (b"" if self.size is None else where),
            ),
            "chunk": lambda: (self.code, self.blob),
        }[self.kind]()
        return _chunk(flags, kind, handle, payload, self.lie)


def _often_none(strategy: st.SearchStrategy[int], weight: int = 6) -> st.SearchStrategy[int | None]:
    """None (the fitting value) `weight` times in `weight + 1`, else a draw from `strategy`."""
    return st.tuples(st.integers(0, weight), strategy).map(
        lambda pair: None if pair[0] < weight else pair[1]
    )


small = st.integers(0, 5000)
common = {
    "flags": _often_none(st.sampled_from([0, 1, 2, 0xFFFF])),
    "handle": _often_none(st.sampled_from([0, 1, 2, 3, 4]) | u64),
    "lie": _often_none(u32, 8),
}
data_reply = st.builds(
    Reply,
    st.just("data"),
    rel=st.sampled_from([0, 0, 50]) | small,
    size=_often_none(small, 3),
    **common,
)
hole_reply = st.builds(
    Reply,
    st.just("hole"),
    rel=st.sampled_from([0, 0, 50]) | small,
    size=_often_none(small | u32, 3),
    **common,
)
status_reply = st.builds(
    Reply,
    st.just("status"),
    code=st.sampled_from([1, 1, 1, 0, 2]),
    extents=st.lists(
        st.tuples(st.sampled_from([100, 4096, 8192]) | small | u32, st.sampled_from([0, 3]) | u32),
        max_size=4,
    ).map(tuple),
    **common,
)
error_reply = st.builds(
    Reply,
    st.just("error"),
    code=st.sampled_from([5, 22, 0]) | u32,
    blob=st.binary(max_size=20),
    size=_often_none(small, 1),
    **common,
)
chunk_reply = st.builds(
    Reply,
    st.just("chunk"),
    code=st.sampled_from([0, 0, 3, 0x8003]) | u16,
    blob=st.binary(max_size=40) | st.just(b""),
    **common,
)
simple_reply = st.builds(
    Reply,
    st.just("simple"),
    code=st.sampled_from([0, 0, 5]) | u32,
    size=_often_none(small, 3),
    handle=common["handle"],
)
junk_reply = st.builds(Reply, st.just("junk"), blob=st.binary(max_size=30))


def _weighted(*choices: st.SearchStrategy[Reply]) -> st.SearchStrategy[list[Reply]]:
    """Groups of 1-3 replies drawn from `choices` (repeat one to weight it)."""
    one = st.sampled_from(choices).flatmap(lambda strategy: strategy)
    return st.lists(one, min_size=1, max_size=3)


# Per request a pair of groups: the first answers reads, the second block status.
reply_groups = st.lists(
    st.tuples(
        _weighted(
            data_reply,
            data_reply,
            data_reply,
            hole_reply,
            hole_reply,
            error_reply,
            chunk_reply,
            simple_reply,
            junk_reply,
            status_reply,
        ),
        _weighted(
            status_reply,
            status_reply,
            status_reply,
            error_reply,
            chunk_reply,
            simple_reply,
            junk_reply,
            data_reply,
        ),
    ),
    max_size=6,
)


def _serve_replies(
    peer: socket.socket, handshake: bytes, groups: list[tuple[list[Reply], list[Reply]]]
) -> None:
    """Play the server: the handshake, then per request one group of rendered replies."""
    try:
        peer.sendall(handshake)
        _recv_exact(peer, 4)  # client flags
        option = 0
        while option != p.OPT_GO:  # the client's options; the replies are scripted
            _, option, length = p.OPTION.unpack(_recv_exact(peer, p.OPTION.size))
            _recv_exact(peer, length)
        peer.settimeout(0.05)  # a client waiting for a reply sends no request: stop then
        for for_read, for_status in groups:
            try:
                request = _recv_exact(peer, p.REQUEST.size)
            except TimeoutError:
                break
            _, _, command, handle, offset, length = p.REQUEST.unpack(request)
            group = for_status if command == p.CMD_BLOCK_STATUS else for_read
            peer.sendall(
                b"".join(
                    r.render(handle, offset, length, i == len(group) - 1)
                    for i, r in enumerate(group)
                )
            )
        peer.settimeout(5)
        peer.shutdown(socket.SHUT_WR)
        while peer.recv(65536):
            pass
    except OSError:
        pass  # the client hung up first: fine
    finally:
        peer.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("client closed")
        buf += chunk
    return buf


def _check_read(data: bytes, length: int, framed: bool) -> None:
    """Scripted data and holes are zeroes; but simple replies carry no framing, so
    there a short reply legitimately swallows the next reply's bytes as data."""
    assert len(data) == length
    assert data == bytes(length) or not framed


def _check_status(extents: list[Extent]) -> None:
    pos = 100
    for e in extents:
        assert e.offset == pos and e.length > 0
        pos += e.length
    assert pos == 100 + 8192


def _client_requests(
    handshake: bytes, groups: list[tuple[list[Reply], list[Reply]]], order: list[int]
) -> None:
    framed = handshake == GOOD_HANDSHAKE
    """Run four operations (in `order`) against scripted replies: each must either
    succeed with a correct result or raise NbdError, quickly."""
    ours, peer = socket.socketpair()
    feeder = threading.Thread(target=_serve_replies, args=(peer, handshake, groups), daemon=True)
    feeder.start()
    started = time.monotonic()
    client = NbdClient(ours, meta_contexts=["base:allocation"], timeout=3)
    operations = [
        lambda: _check_read(client.pread(4096, 0), 4096, framed),
        lambda: _check_status(client.block_status("base:allocation", 100, 8192)),
        lambda: [_check_read(d, 100, framed) for _, d in client.read_many([(0, 100), (200, 100)])],
        lambda: _check_read(client.pread(100, 1000), 100, framed),
    ]
    try:
        for i in order:
            try:
                operations[i]()
            except NbdError:
                pass
    finally:
        client.close()
    feeder.join(5)
    assert not feeder.is_alive()
    assert time.monotonic() - started < 2.5, "the client waited for a timeout"


STATUS_FIRST = [1, 0, 2, 3]


@FUZZ
@given(reply_groups, st.permutations(range(4)))
@example(  # the last extent overhangs the request: clipped
    [([], [Reply("status", code=1, extents=((4096, 0), (8192, 3)))])], STATUS_FIRST
)
@example(  # short answers: the client asks again for the rest
    [([], [Reply("status", code=1, extents=((4096, 0),))]) for _ in range(3)], STATUS_FIRST
)
@example(  # data and hole chunks out of order; an error chunk, then NBD_REPLY_TYPE_NONE
    [
        ([Reply("data", rel=2048), Reply("hole", size=2048)], []),
        ([], [Reply("error", code=5, blob=b"bad"), Reply("chunk", code=0)]),
        ([Reply("data", size=50), Reply("data", rel=50)], []),
        ([Reply("error", code=22, size=0, flags=0), Reply("chunk", code=0)], []),
        ([Reply("simple")], []),
    ],
    [0, 1, 2, 3],
)
def test_client_structured_replies(
    groups: list[tuple[list[Reply], list[Reply]]], order: list[int]
) -> None:
    _client_requests(GOOD_HANDSHAKE, groups, order)


@FUZZ
@given(reply_groups, st.permutations(range(4)))
def test_client_simple_replies(
    groups: list[tuple[list[Reply], list[Reply]]], order: list[int]
) -> None:
    _client_requests(SIMPLE_HANDSHAKE, groups, order)


def test_client_times_out_on_a_silent_server() -> None:
    ours, peer = socket.socketpair()
    try:
        started = time.monotonic()
        with pytest.raises(NbdError, match="timed out"):
            NbdClient(ours, timeout=0.3)
        assert time.monotonic() - started < 3
        ours, peer2 = socket.socketpair()
        peer2.sendall(GOOD_HANDSHAKE)
        client = NbdClient(ours, meta_contexts=["base:allocation"], timeout=0.3)
        peer2.sendall(_chunk(0, 1, 1, p.U64.pack(0) + b"x" * 10, 4096 + 8))  # then stall
        started = time.monotonic()
        with pytest.raises(NbdError, match="timed out"):
            client.pread(4096, 0)
        assert time.monotonic() - started < 3
        with pytest.raises(NbdError, match="timed out"):  # the connection stays dead
            client.pread(1, 0)
        client.close()
        peer2.close()
    finally:
        peer.close()


# --- the server against a scripted client ---------------------------------------------------


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[NbdServer, _Errors]]:
    data = bytes(range(256)) * (EXPORT_SIZE // 256)
    limits = ServerLimits(client_timeout=5)
    server = NbdServer({"disk": MemoryExport("disk", data, [(4096, 8192)])}, limits=limits)
    errors = _Errors()
    logger = logging.getLogger("strongroom.nbd")
    logger.addHandler(errors)
    try:
        yield server, errors
    finally:
        logger.removeHandler(errors)
        server.shutdown()


def _server_session(server: NbdServer, errors: _Errors, script: bytes) -> None:
    """Send `script` and end of file; the server must answer and hang up on its own."""
    errors.records.clear()
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    worker = threading.Thread(target=server.serve_connection, args=(theirs,), daemon=True)
    worker.start()
    try:
        ours.sendall(script)
        ours.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server hung up before reading it all
    try:
        while ours.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    worker.join(5)
    ours.close()
    assert not worker.is_alive(), "the server kept the connection open"
    assert not errors.records, errors.records[0].getMessage()


@FUZZ
@given(st.binary(max_size=200))
def test_server_random_bytes(fuzz_server: tuple[NbdServer, _Errors], script: bytes) -> None:
    _server_session(*fuzz_server, script)


option_data = st.one_of(
    st.builds(
        p.encode_info_request,
        st.sampled_from(["", "disk", "nope"]),
        st.lists(u16 | st.sampled_from([0, 1, 2, 3]), max_size=4),
    ),
    st.builds(
        p.encode_meta_context_request,
        st.sampled_from(["", "disk", "x"]),
        st.lists(st.sampled_from(["base:allocation", "base:", "qemu:x", ""]), max_size=3),
    ),
    st.binary(max_size=40),
)
options = st.builds(
    lambda magic, opt, data, lie: (
        p.OPTION.pack(magic, opt, len(data) if lie is None else lie) + data
    ),
    st.just(p.IHAVEOPT) | st.just(p.IHAVEOPT) | u64,
    st.sampled_from(range(12)) | u32,
    option_data,
    st.none() | st.none() | st.none() | u32,
)
CFLAGS = p.U32.pack(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES)


@FUZZ
@given(st.lists(options, max_size=8))
def test_server_options(fuzz_server: tuple[NbdServer, _Errors], opts: list[bytes]) -> None:
    _server_session(*fuzz_server, CFLAGS + b"".join(opts))


def _option(option: int, data: bytes = b"") -> bytes:
    return p.OPTION.pack(p.IHAVEOPT, option, len(data)) + data


def _request(magic: int, flags: int, command: int, handle: int, offset: int, length: int) -> bytes:
    head = p.REQUEST.pack(magic, flags, command, handle, offset, length)
    return head + (bytes(length) if command == p.CMD_WRITE and length <= 70000 else b"")


requests = st.builds(
    _request,
    st.sampled_from([p.REQUEST_MAGIC] * 9 + [0]) | u32.filter(lambda m: m % 7 == 0),
    st.sampled_from([0, 0, 1, 4, 8]) | u16,
    st.sampled_from([0, 0, 1, 2, 3, 4, 5, 6, 7, 7, 8]) | u16,
    u64,
    st.integers(0, EXPORT_SIZE + 10) | st.integers(0, EXPORT_SIZE + 10) | u64,
    st.integers(0, 70000) | st.integers(0, 70000) | u32,
)


@FUZZ
@given(st.booleans(), st.lists(requests, max_size=10))
def test_server_requests(
    fuzz_server: tuple[NbdServer, _Errors], structured: bool, reqs: list[bytes]
) -> None:
    handshake = CFLAGS
    if structured:
        handshake += _option(p.OPT_STRUCTURED_REPLY) + _option(
            p.OPT_SET_META_CONTEXT, p.encode_meta_context_request("disk", ["base:allocation"])
        )
    handshake += _option(p.OPT_GO, p.encode_info_request("disk", []))
    _server_session(*fuzz_server, handshake + b"".join(reqs))
