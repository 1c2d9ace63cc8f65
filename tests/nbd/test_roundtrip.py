"""Our client against our server, and the server's handshake seen byte by byte."""

from __future__ import annotations

import itertools
import logging
import random
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import UsageError
from strongroom.nbd import protocol as p
from strongroom.nbd.client import Extent, NbdClient, NbdError
from strongroom.nbd.exports import MemoryExport, clip_extents
from strongroom.nbd.server import NbdServer
from tests.nbd.conftest import MiB, Served


def test_block_status_matches_the_holes(served: Served) -> None:
    with NbdClient.connect(served.uri, meta_contexts=["base:allocation", "qemu:x"]) as client:
        assert client.contexts == {"base:allocation": 1}
        extents = client.block_status("base:allocation", 0, client.size)
        expected, pos = [], 0
        for off, n in served.holes:
            if off > pos:
                expected.append(Extent(pos, off - pos, 0))
            expected.append(Extent(off, n, p.STATE_HOLE | p.STATE_ZERO))
            pos = off + n
        assert extents == expected
        inner = client.block_status("base:allocation", 5 * MiB, 100)
        assert inner == [Extent(5 * MiB, 100, 3)]


def test_hole_reads_send_no_data(served: Served) -> None:
    with NbdClient.connect(served.uri) as client:
        off, n = served.holes[0]
        assert client.pread(n + 200, off - 100) == served.data[off - 100 : off + n + 100]
        assert client.bytes_read == 200
        assert client.pread(len(served.data), 0) == served.data
        assert client.bytes_read == 200 + len(served.data) - sum(n for _, n in served.holes)


def test_read_many_deeper_than_the_servers_budget(served: Served) -> None:
    rng = random.Random(5)
    ranges = [(rng.randrange(len(served.data) - MiB), rng.randrange(1, MiB)) for _ in range(150)]
    with NbdClient.connect(served.uri) as client:
        for (o, n), (got_o, got) in zip(ranges, client.read_many(ranges, depth=40), strict=True):
            assert got_o == o and got == served.data[o : o + n]


def test_simple_replies(served: Served) -> None:
    with NbdClient.connect(served.uri, structured_replies=False) as client:
        assert not client.structured_replies and client.contexts == {}
        assert client.pread(len(served.data), 0) == served.data
        assert client.bytes_read == len(served.data)
        assert dict(client.read_many([(0, 10), (4 * MiB, 10)])) == {
            0: served.data[:10],
            4 * MiB: bytes(10),
        }


def test_many_clients_in_parallel(served: Served) -> None:
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        try:
            rng = random.Random(seed)
            with NbdClient.connect(served.uri) as client:
                for _ in range(30):
                    o = rng.randrange(len(served.data) - MiB)
                    n = rng.randrange(1, MiB)
                    assert client.pread(n, o) == served.data[o : o + n]
        except BaseException as err:  # report in the main thread
            errors.append(err)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert served.server.connections >= 6


# --- the handshake byte by byte --------------------------------------------------------------


class RawClient:
    """Speaks the option phase by hand, to reach corners our NbdClient never visits."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        magic, opt, flags = p.GREETING.unpack(self.recv(p.GREETING.size))
        assert (magic, opt) == (p.NBDMAGIC, p.IHAVEOPT)
        assert flags == p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES
        self.sock.sendall(p.U32.pack(p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES))

    def recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "server closed the connection"
            buf += chunk
        return buf

    def option(self, option: int, data: bytes = b"") -> list[tuple[int, bytes]]:
        """Send an option; the replies up to the final one, as (type, data)."""
        self.sock.sendall(p.OPTION.pack(p.IHAVEOPT, option, len(data)) + data)
        replies = []
        while True:
            magic, echoed, kind, length = p.OPTION_REPLY.unpack(self.recv(20))
            assert (magic, echoed) == (p.OPTION_REPLY_MAGIC, option)
            replies.append((kind, self.recv(length)))
            if kind == p.REP_ACK or kind & p.REP_FLAG_ERROR:
                return replies

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def test_option_corners(served: Served) -> None:
    raw = RawClient(served.sock)
    assert raw.option(99, b"whatever")[-1][0] == p.REP_ERR_UNSUP
    assert raw.option(p.OPT_STARTTLS)[-1][0] == p.REP_ERR_UNSUP
    assert raw.option(p.OPT_LIST, b"x")[-1][0] == p.REP_ERR_INVALID
    meta = p.encode_meta_context_request("disk", [])
    assert raw.option(p.OPT_LIST_META_CONTEXT, meta)[-1][0] == p.REP_ERR_INVALID  # no SR yet
    assert raw.option(p.OPT_STRUCTURED_REPLY) == [(p.REP_ACK, b"")]
    assert raw.option(p.OPT_STRUCTURED_REPLY)[-1][0] == p.REP_ERR_INVALID  # twice
    listed = raw.option(p.OPT_LIST_META_CONTEXT, meta)
    assert listed == [(p.REP_META_CONTEXT, p.U32.pack(0) + b"base:allocation"), (p.REP_ACK, b"")]
    for query in (["base:"], ["base:allocation", "qemu:dirty-bitmap:x"]):
        listed = raw.option(p.OPT_LIST_META_CONTEXT, p.encode_meta_context_request("", query))
        assert [k for k, _ in listed] == [p.REP_META_CONTEXT, p.REP_ACK]
    unknown = p.encode_meta_context_request("nope", ["base:allocation"])
    assert raw.option(p.OPT_SET_META_CONTEXT, unknown)[-1][0] == p.REP_ERR_UNKNOWN
    assert raw.option(p.OPT_SET_META_CONTEXT, b"\0\0\0\5ab")[-1][0] == p.REP_ERR_INVALID
    info = raw.option(p.OPT_INFO, p.encode_info_request("", [p.INFO_NAME, p.INFO_DESCRIPTION]))
    kinds = {d[:2]: d[2:] for k, d in info if k == p.REP_INFO}
    assert kinds[p.U16.pack(p.INFO_NAME)] == b"disk"
    assert kinds[p.U16.pack(p.INFO_DESCRIPTION)] == b"test disk"
    assert p.U16.pack(p.INFO_EXPORT) in kinds and p.U16.pack(p.INFO_BLOCK_SIZE) in kinds
    assert raw.option(p.OPT_GO, p.encode_info_request("x", []))[-1][0] == p.REP_ERR_UNKNOWN
    assert raw.option(p.OPT_GO, b"\0\0\0\1")[-1][0] == p.REP_ERR_INVALID
    assert raw.option(p.OPT_ABORT) == [(p.REP_ACK, b"")]
    assert raw.closed()


def test_contexts_chosen_for_another_export_do_not_carry_over(tmp_path: Path) -> None:
    exports = {n: MemoryExport(n, bytes(MiB), [(0, MiB)]) for n in ("a", "b")}
    with NbdServer(exports) as server:
        server.listen_unix(str(tmp_path / "s"))
        server.start()
        raw = RawClient(tmp_path / "s")
        raw.option(p.OPT_STRUCTURED_REPLY)
        chosen = raw.option(p.OPT_SET_META_CONTEXT, p.encode_meta_context_request("a", ["base:"]))
        assert chosen == [(p.REP_ACK, b"")]  # a namespace alone selects nothing
        raw.option(p.OPT_SET_META_CONTEXT, p.encode_meta_context_request("a", ["base:allocation"]))
        assert raw.option(p.OPT_GO, p.encode_info_request("b", []))[-1][0] == p.REP_ACK
        raw.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_BLOCK_STATUS, 7, 0, 4096))
        magic, _, kind, handle, length = p.CHUNK.unpack(raw.recv(p.CHUNK.size))
        assert (magic, kind, handle) == (p.STRUCTURED_REPLY_MAGIC, p.REPLY_TYPE_ERROR, 7)
        code, _, _ = p.decode_error_payload(kind, raw.recv(length))
        assert code == p.EINVAL
        raw.sock.sendall(p.REQUEST.pack(0xDEADBEEF, 0, 0, 0, 0, 0))  # bad magic: dropped
        assert raw.closed()


def test_export_name_option_and_no_default(tmp_path: Path) -> None:
    exports = {n: MemoryExport(n, bytes(4096 * (i + 1))) for i, n in enumerate(("a", "b"))}
    with NbdServer(exports) as server:  # two exports, no default: the empty name is unknown
        server.listen_unix(str(tmp_path / "s"))
        server.start()
        raw = RawClient(tmp_path / "s")
        raw.sock.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_EXPORT_NAME, 1) + b"b")
        size, flags = p.EXPORT_NAME_REPLY.unpack(raw.recv(p.EXPORT_NAME_REPLY.size))
        assert size == 8192 and flags & p.FLAG_READ_ONLY
        raw.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, 9, 4096, 5))
        assert p.SIMPLE_REPLY.unpack(raw.recv(16)) == (p.SIMPLE_REPLY_MAGIC, 0, 9)
        assert raw.recv(5) == bytes(5)
        raw.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_DISC, 0, 0, 0))
        assert raw.closed()
        raw = RawClient(tmp_path / "s")
        raw.sock.sendall(p.OPTION.pack(p.IHAVEOPT, p.OPT_EXPORT_NAME, 0))
        assert raw.closed()


# --- clip_extents --------------------------------------------------------------------------

segments = st.lists(
    st.tuples(st.integers(-10, 300), st.integers(-5, 120), st.booleans()), max_size=12
)


@given(segments, st.integers(0, 200), st.integers(0, 150))
def test_clip_extents_covers_exactly(raw: list[tuple[int, int, bool]], off: int, n: int) -> None:
    out = clip_extents(sorted(raw), off, n)
    pos = off
    for start, size, _ in out:
        assert start == pos and size > 0
        pos += size
    assert pos == off + n
    assert all(a[2] != b[2] for a, b in itertools.pairwise(out))


def test_clip_extents_examples() -> None:
    assert clip_extents([(0, 10, True), (10, 10, False)], 5, 10) == [(5, 5, True), (10, 5, False)]
    assert clip_extents([(20, 5, True)], 10, 20) == [(10, 10, False), (20, 5, True), (25, 5, False)]
    assert clip_extents([(0, 4, True), (4, 4, True)], 0, 8) == [(0, 8, True)]
    assert clip_extents([], 3, 0) == []


class BuggyExport(MemoryExport):
    def read(self, offset: int, length: int) -> memoryview:
        if offset >= 4096:
            raise RuntimeError("a bug in the export")
        return super().read(offset, length)


def test_a_buggy_export_gives_eio_and_a_logged_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with NbdServer({"b": BuggyExport("b", bytes(MiB))}) as server:
        uri = server.listen_unix(str(tmp_path / "s"))
        server.start()
        with caplog.at_level(logging.ERROR), NbdClient.connect(uri) as client:
            with pytest.raises(NbdError, match="EIO") as info:
                client.pread(10, 8192)
            assert info.value.error == p.EIO
            assert client.pread(10, 0) == bytes(10)  # the connection goes on
    assert "a bug in the export" in caplog.text and "Traceback" in caplog.text


def test_descriptions_are_cleaned_and_bad_setups_refused(tmp_path: Path) -> None:
    text = "line\0with a nul " + "é" * 3000  # 6000+ bytes of UTF-8
    with NbdServer({"d": MemoryExport("d", bytes(4096), description=text)}) as server:
        uri = server.listen_unix(str(tmp_path / "s"))
        server.start()
        with NbdClient.connect(uri) as client:
            assert client.description.startswith("linewith a nul é")
            assert len(client.description.encode()) <= p.MAX_STRING
    with pytest.raises(UsageError):
        NbdServer({})
    with pytest.raises(UsageError, match="invalid NBD export name"):
        NbdServer({"a\0b": MemoryExport("x", b"")})
    with pytest.raises(UsageError, match="not among"):
        NbdServer({"a": MemoryExport("a", b"")}, default_export="b")
