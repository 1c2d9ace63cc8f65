"""NbdClient against the real servers: qemu-nbd (raw, qcow2 with a dirty bitmap and
allocation depth, writable, TCP) and nbdkit (no structured replies, old handshakes)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from strongroom.errors import UsageError
from strongroom.nbd.client import Extent, NbdClient, NbdError
from strongroom.nbd.protocol import EINVAL, STATE_DIRTY, STATE_HOLE, STATE_ZERO
from tests.nbd.conftest import MiB, nbdkit, need, pattern, qemu_nbd, qemu_nbd_tcp, run


def merged(extents: list[Extent], flags_of: int) -> list[tuple[int, int]]:
    """[start, end) ranges whose flags include `flags_of`, neighbours merged."""
    out: list[tuple[int, int]] = []
    for e in extents:
        if e.flags & flags_of == flags_of:
            if out and out[-1][1] == e.offset:
                out[-1] = (out[-1][0], e.offset + e.length)
            else:
                out.append((e.offset, e.offset + e.length))
    return out


def assert_covers(extents: list[Extent], offset: int, length: int) -> None:
    pos = offset
    for e in extents:
        assert e.offset == pos and e.length > 0
        pos += e.length
    assert pos == offset + length


@pytest.fixture
def raw_image(tmp_path: Path) -> tuple[Path, bytes]:
    data = pattern(8 * MiB + 9 * 512, seed=7)  # qemu rounds sizes up to 512
    path = tmp_path / "file.raw"
    path.write_bytes(data)
    return path, data


def test_pread_read_many_and_bytes_read(tmp_path: Path, raw_image: tuple[Path, bytes]) -> None:
    path, data = raw_image
    with (
        qemu_nbd(path, "-r", "-f", "raw", sock=tmp_path / "s") as uri,
        NbdClient.connect(uri) as client,
    ):
        assert client.size == len(data)
        assert client.read_only and client.structured_replies
        assert client.pread(len(data), 0) == data
        assert client.bytes_read == len(data)
        assert client.pread(0, 5) == b""
        assert client.pread(100, len(data) - 100) == data[-100:]
        buf = bytearray(3 * MiB + 17)
        client.pread_into(memoryview(buf), 999)
        assert buf == data[999 : 999 + len(buf)]

        rng = random.Random(3)
        ranges = [(rng.randrange(len(data) - 70000), rng.randrange(70000)) for _ in range(200)]
        ranges += [(0, len(data)), (5, 0)]
        before = client.bytes_read
        got = list(client.read_many(ranges, depth=5))
        assert [o for o, _ in got] == [o for o, _ in ranges]
        assert all(d == data[o : o + n] for (o, n), (_, d) in zip(ranges, got, strict=True))
        assert client.bytes_read - before == sum(n for _, n in ranges)


def test_reads_split_by_the_servers_maximum(tmp_path: Path, raw_image: tuple[Path, bytes]) -> None:
    path, data = raw_image
    with (
        qemu_nbd(path, "-r", "-f", "raw", sock=tmp_path / "s") as uri,
        NbdClient.connect(uri) as client,
    ):
        client._request_cap = 64 * 1024  # as if the server's maximum were 64 KiB
        assert client.pread(len(data) - 3, 3) == data[3:]
        ranges = [(o, 300_001) for o in range(0, len(data) - 300_001, 700_000)]
        got = dict(client.read_many(ranges, depth=3))
        assert all(got[o] == data[o : o + n] for o, n in ranges)


def test_early_stop_of_read_many_leaves_the_client_usable(
    tmp_path: Path, raw_image: tuple[Path, bytes]
) -> None:
    path, data = raw_image
    with (
        qemu_nbd(path, "-r", "-f", "raw", sock=tmp_path / "s") as uri,
        NbdClient.connect(uri) as client,
    ):
        for offset, chunk in client.read_many(((o, 4096) for o in range(0, MiB, 4096)), 16):
            assert chunk == data[offset : offset + 4096]
            if offset == 8192:
                break
        assert client.pread(10, 20) == data[20:30]


def test_sparse_qcow2_block_status_and_hole_reads(tmp_path: Path) -> None:
    need("qemu-img", "qemu-io")
    img = tmp_path / "sparse.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 2M", "-c", "write -P 0xcd 40M 64k", img)
    with (
        qemu_nbd(img, "-r", "-f", "qcow2", sock=tmp_path / "s") as uri,
        NbdClient.connect(uri, meta_contexts=["base:allocation", "nbd:nothing"]) as client,
    ):
        assert client.contexts.keys() == {"base:allocation"}
        assert client.has_context("base:allocation") and not client.has_context("nbd:nothing")
        extents = client.block_status("base:allocation", 0, client.size)
        assert_covers(extents, 0, client.size)
        holes = merged(extents, STATE_HOLE | STATE_ZERO)
        assert holes == [(0, MiB), (3 * MiB, 40 * MiB), (40 * MiB + 65536, 64 * MiB)]
        part = client.block_status("base:allocation", MiB + 5, 3 * MiB)  # starts mid-extent
        assert_covers(part, MiB + 5, 3 * MiB)
        assert merged(part, STATE_HOLE) == [(3 * MiB, 4 * MiB + 5)]

        data = client.pread(client.size, 0)
        expected = bytearray(64 * MiB)
        expected[MiB : 3 * MiB] = b"\xab" * (2 * MiB)
        expected[40 * MiB : 40 * MiB + 65536] = b"\xcd" * 65536
        assert data == expected
        # Holes came as NBD_REPLY_TYPE_OFFSET_HOLE: only the data crossed the wire.
        assert client.bytes_read == 2 * MiB + 65536
        with pytest.raises(NbdError, match="not negotiated"):
            client.block_status("qemu:dirty-bitmap:b0", 0, 4096)


def test_dirty_bitmap_and_allocation_depth(tmp_path: Path) -> None:
    need("qemu-img", "qemu-io")
    img = tmp_path / "d.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", img)
    run("qemu-img", "bitmap", "--add", "-g", "65536", img, "b0")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 64k", "-c", "write -z 4M 1M", img)
    run("qemu-img", "bitmap", "--disable", img, "b0")
    wanted = ["base:allocation", "qemu:dirty-bitmap:b0", "qemu:allocation-depth"]
    with (
        qemu_nbd(img, "-r", "-f", "qcow2", "-B", "b0", "-A", sock=tmp_path / "s") as uri,
        NbdClient.connect(uri, meta_contexts=wanted) as client,
    ):
        assert sorted(client.contexts) == sorted(wanted)
        dirty = client.block_status("qemu:dirty-bitmap:b0", 0, client.size)
        assert_covers(dirty, 0, client.size)
        assert merged(dirty, STATE_DIRTY) == [(MiB, MiB + 65536), (4 * MiB, 5 * MiB)]
        depth = client.block_status("qemu:allocation-depth", 0, client.size)
        assert_covers(depth, 0, client.size)
        allocated = [(e.offset, e.offset + e.length) for e in depth if e.flags == 1]
        assert allocated and allocated[0][0] == 0 and allocated[-1][1] == 8 * MiB
        assert all(e.flags == 0 for e in depth if e.offset >= 8 * MiB)
        assert client.pread(4, MiB) == b"\x22" * 4 and client.pread(4, 4 * MiB) == bytes(4)


def test_writes_zeroes_and_flush(tmp_path: Path) -> None:
    need("qemu-img")
    size = 6 * MiB
    img, expected_file = tmp_path / "w.raw", tmp_path / "expected.raw"
    img.write_bytes(pattern(size, seed=2))
    expected = bytearray(pattern(size, seed=2))
    with (
        qemu_nbd(img, "-f", "raw", sock=tmp_path / "s") as uri,
        NbdClient.connect(uri) as client,
    ):
        assert not client.read_only and client.can_flush and client.can_write_zeroes
        client.pwrite(b"hello", 10)
        client.pwrite(memoryview(b"x" * 70000), MiB - 3, fua=True)
        client.write_many([(o, bytes([o % 251]) * 4096) for o in range(2 * MiB, 3 * MiB, 8192)])
        client.write_zeroes(3 * MiB + 1, 500_000)
        client.write_zeroes(4 * MiB, MiB, may_trim=False)
        client.can_write_zeroes = False  # the fallback: plain writes of zeroes
        client._request_cap = 256 * 1024
        client.write_zeroes(5 * MiB - 7, 600_000)
        client.trim(size - 4096, 4096)  # content undefined afterwards: rewritten below
        client.pwrite(b"\x01" * 4096, size - 4096)
        client.flush()
        assert client.pread(5, 10) == b"hello"
    expected[10:15] = b"hello"
    expected[MiB - 3 : MiB - 3 + 70000] = b"x" * 70000
    for o in range(2 * MiB, 3 * MiB, 8192):
        expected[o : o + 4096] = bytes([o % 251]) * 4096
    for o, n in [(3 * MiB + 1, 500_000), (4 * MiB, MiB), (5 * MiB - 7, 600_000)]:
        expected[o : o + n] = bytes(n)
    expected[size - 4096 :] = b"\x01" * 4096
    expected_file.write_bytes(expected)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", img, expected_file)


def test_tcp_uri(tmp_path: Path, raw_image: tuple[Path, bytes]) -> None:
    path, data = raw_image
    with qemu_nbd_tcp(path, "-r", "-f", "raw") as uri:
        assert uri.startswith("nbd://127.0.0.1:")
        with NbdClient.connect(uri) as client:
            assert client.pread(MiB, 12345) == data[12345 : 12345 + MiB]


def test_named_export_and_unknown_export(tmp_path: Path, raw_image: tuple[Path, bytes]) -> None:
    path, data = raw_image
    with qemu_nbd(path, "-r", "-f", "raw", sock=tmp_path / "s", export="vda") as uri:
        with NbdClient.connect(uri) as client:
            assert client.export == "vda" and client.pread(4, 0) == data[:4]
        with pytest.raises(NbdError, match="export 'nope'") as info:
            NbdClient.connect(uri.replace("/vda?", "/nope?"))
        assert "\n" not in str(info.value)


def test_server_errors_leave_the_connection_usable(
    tmp_path: Path, raw_image: tuple[Path, bytes]
) -> None:
    path, data = raw_image
    with (
        qemu_nbd(path, "-r", "-f", "raw", sock=tmp_path / "s") as uri,
        NbdClient.connect(uri) as client,
    ):
        with pytest.raises(NbdError, match="beyond the end"):
            client.pread(10, client.size - 5)
        with pytest.raises(NbdError, match="read-only"):
            client.pwrite(b"x", 0)
        client.size += MiB  # lie, so that the request reaches qemu-nbd
        started = time.monotonic()
        with pytest.raises(NbdError, match="EINVAL") as info:
            client.pread(4096, len(data))
        assert info.value.error == EINVAL and time.monotonic() - started < 5
        assert uri in str(info.value)
        client.read_only = False
        with pytest.raises(NbdError, match=r"write of 1 bytes at 0 failed: E\w+ \(.*read-only"):
            client.pwrite(b"x", 0)  # qemu-nbd says EINVAL ("Export is read-only")
        assert client.pread(3, 1) == data[1:4]


def test_connect_failures_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sock"
    with pytest.raises(NbdError) as info:
        NbdClient.connect(f"nbd+unix:///?socket={missing}")
    message = str(info.value)
    assert "\n" not in message and "cannot connect" in message and str(missing) in message
    with pytest.raises(UsageError):
        NbdClient.connect("http://example.org/")


@pytest.mark.parametrize(
    ("flags", "structured"),
    # Without fixed newstyle (a masked handshake, oldstyle) there are no options at all.
    [(["--no-sr"], False), (["--mask-handshake=0"], False), (["--oldstyle"], False)],
    ids=["simple-replies", "plain-newstyle", "oldstyle"],
)
def test_nbdkit_without_modern_features(
    tmp_path: Path, raw_image: tuple[Path, bytes], flags: list[str], structured: bool
) -> None:
    path, data = raw_image
    with (
        nbdkit(*flags, "-r", "file", str(path), sock=tmp_path / "k") as uri,
        NbdClient.connect(uri, meta_contexts=["base:allocation"]) as client,
    ):
        assert client.size == len(data)
        assert client.structured_replies is structured
        assert client.contexts == {}
        assert client.pread(len(data), 0) == data
        got = list(client.read_many([(5, 100), (MiB, 2 * MiB)]))
        assert got == [(5, bytearray(data[5:105])), (MiB, bytearray(data[MiB : 3 * MiB]))]
        with pytest.raises(NbdError, match="not negotiated"):
            client.block_status("base:allocation", 0, 512)


def test_block_size_constraints_are_honoured(tmp_path: Path, raw_image: tuple[Path, bytes]) -> None:
    """nbdkit's blocksize-policy filter rejects reads that are unaligned or too big."""
    path, data = raw_image
    policy = [
        "blocksize-minimum=512",
        "blocksize-preferred=4096",
        "blocksize-maximum=65536",
        "blocksize-error-policy=error",
    ]
    with (
        nbdkit(
            "--filter=blocksize-policy", "-r", "file", str(path), *policy, sock=tmp_path / "k"
        ) as uri,
        NbdClient.connect(uri) as client,
    ):
        assert (client.min_block, client.preferred_block, client.max_block) == (512, 4096, 65536)
        assert client.pread(10, 3) == data[3:13]
        assert client.pread(300_000, 4000) == data[4000:304_000]
        ranges = [(1, 2), (511, 2), (0, len(data)), (len(data) - 7, 7)]
        assert list(client.read_many(ranges)) == [(o, data[o : o + n]) for o, n in ranges]
        client.min_block = 1  # forget the constraint: the server enforces it
        with pytest.raises(NbdError, match="EINVAL"):
            client.pread(10, 3)
