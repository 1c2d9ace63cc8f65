"""NbdServer as the real tools see it: qemu-img, qemu-io, nbdinfo and nbdcopy."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from strongroom.errors import UsageError
from strongroom.nbd.client import NbdClient, NbdError
from strongroom.nbd.exports import MemoryExport, Segment
from strongroom.nbd.protocol import EIO, STATE_HOLE, STATE_ZERO
from strongroom.nbd.server import NbdServer
from tests.nbd.conftest import MiB, Served, holey, need, pattern, run


def test_qemu_img_compare_and_convert(served: Served, tmp_path: Path) -> None:
    need("qemu-img")
    proc = run("qemu-img", "compare", "-f", "raw", "-F", "raw", served.uri, served.file)
    assert "identical" in proc.stdout
    out = tmp_path / "out.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", served.uri, out)
    assert out.read_bytes() == served.data
    assert served.server.bytes_served >= len(served.data) - sum(n for _, n in served.holes)


def test_nbdinfo_json_reports_size_and_read_only(served: Served) -> None:
    need("nbdinfo")
    info = json.loads(run("nbdinfo", "--json", served.uri).stdout)
    (export,) = info["exports"]
    assert export["export-name"] == "disk"
    assert export["export-size"] == len(served.data)
    assert export["is_read_only"] is True
    assert export["can_multi_conn"] is True
    assert export["description"] == "test disk"
    assert export["block_size_minimum"] == 1
    assert export["block_size_maximum"] == 32 * MiB
    assert "base:allocation" in export["contexts"]


def test_nbdinfo_map_shows_the_holes(served: Served) -> None:
    need("nbdinfo")
    lines = run("nbdinfo", "--map", served.uri).stdout.splitlines()
    rows = [(int(a), int(b), int(c)) for a, b, c, *_ in (line.split() for line in lines)]
    assert rows[0][0] == 0 and sum(n for _, n, _ in rows) == len(served.data)
    holes = [(o, n) for o, n, flags in rows if flags == STATE_HOLE | STATE_ZERO]
    assert holes == served.holes
    assert all(flags in (0, 3) for _, _, flags in rows)


def test_nbdcopy_copies_the_export(served: Served, tmp_path: Path) -> None:
    need("nbdcopy")
    out = tmp_path / "copy.raw"
    run("nbdcopy", served.uri, out)
    assert out.read_bytes() == served.data


def test_qemu_io_cannot_write(served: Served) -> None:
    need("qemu-io")
    proc = run("qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4k", served.uri, check=False)
    assert proc.returncode != 0
    assert "Permission denied" in proc.stderr or "read-only" in proc.stderr


def test_writes_get_eperm_and_the_connection_survives(served: Served) -> None:
    with NbdClient.connect(served.uri) as client:
        client.read_only = False  # send them anyway
        client.can_write_zeroes = client.can_trim = True
        for attempt in (
            lambda: client.pwrite(b"x" * 70000, 5),
            lambda: client.write_zeroes(0, 4096),
            lambda: client.trim(0, 4096),
        ):
            with pytest.raises(NbdError, match="EPERM") as info:
                attempt()
            assert info.value.error == 1
        client.flush()
        assert client.pread(100, 0) == served.data[:100]


def test_four_concurrent_qemu_img_converts(served: Served, tmp_path: Path) -> None:
    need("qemu-img")
    outs = [tmp_path / f"out{i}.raw" for i in range(4)]
    procs = [
        subprocess.Popen(
            ["qemu-img", "convert", "-f", "raw", "-O", "raw", served.uri, str(out)],
            stderr=subprocess.PIPE,
        )
        for out in outs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert all(out.read_bytes() == served.data for out in outs)
    assert served.server.connections >= 4


class FlakyExport(MemoryExport):
    """Reads touching [bad, bad+4096) fail with OSError; extents fail past `bad_status`."""

    def __init__(self, data: bytes, bad: int, bad_status: int) -> None:
        super().__init__("flaky", data)
        self.bad, self.bad_status = bad, bad_status

    def read(self, offset: int, length: int) -> memoryview:
        if offset < self.bad + 4096 and self.bad < offset + length:
            raise OSError(5, "simulated media error")
        return super().read(offset, length)

    def extents(self, offset: int, length: int) -> list[Segment]:
        if offset + length > self.bad_status:
            raise OSError(5, "simulated metadata error")
        return super().extents(offset, length)


def test_failing_reads_are_eio_and_the_server_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = pattern(4 * MiB)
    bad = 3 * MiB
    server = NbdServer({"flaky": FlakyExport(data, bad, bad_status=2 * MiB)})
    uri = server.listen_unix(str(tmp_path / "f.sock"))
    server.start()
    try:
        with (
            caplog.at_level(logging.WARNING, logger="strongroom.nbd"),
            NbdClient.connect(uri, meta_contexts=["base:allocation"]) as client,
            NbdClient.connect(uri, structured_replies=False) as simple,
        ):
            for c in (client, simple):
                with pytest.raises(NbdError, match="EIO") as info:
                    c.pread(MiB, bad - 100)
                assert info.value.error == EIO
                assert c.pread(MiB, 0) == data[:MiB]
            with pytest.raises(NbdError, match="EIO"):
                client.block_status("base:allocation", 0, 4 * MiB)
            assert client.block_status("base:allocation", 0, MiB)[0].flags == 0
    finally:
        server.shutdown()
    assert "simulated media error" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_read_many_error_mid_stream(tmp_path: Path) -> None:
    data = pattern(2 * MiB)
    with NbdServer({"flaky": FlakyExport(data, MiB, bad_status=2 * MiB)}) as server:
        uri = server.listen_unix(str(tmp_path / "f.sock"))
        server.start()
        with NbdClient.connect(uri) as client:
            seen = []
            with pytest.raises(NbdError, match="EIO"):
                for offset, chunk in client.read_many([(0, 4096), (MiB, 10), (8192, 4096)]):
                    seen.append((offset, bytes(chunk)))
            assert seen == [(0, data[:4096])]
            assert client.pread(4096, 8192) == data[8192 : 8192 + 4096]


def test_qemu_img_convert_fails_cleanly_on_eio(tmp_path: Path) -> None:
    need("qemu-img")
    data = pattern(4 * MiB)
    with NbdServer({"flaky": FlakyExport(data, 3 * MiB, bad_status=8 * MiB)}) as server:
        uri = server.listen_unix(str(tmp_path / "f.sock"))
        server.start()
        proc = run("qemu-img", "convert", "-O", "raw", uri, tmp_path / "o.raw", check=False)
        assert proc.returncode != 0 and "Input/output error" in proc.stderr
        with NbdClient.connect(uri) as client:  # still serving
            assert client.pread(10, 0) == data[:10]


def test_nbdinfo_list_shows_every_export(tmp_path: Path) -> None:
    need("nbdinfo")
    exports = {
        "alpha": MemoryExport("alpha", bytes(MiB), description="first"),
        "beta": MemoryExport("beta", pattern(2 * MiB), description="second"),
    }
    with NbdServer(exports, default_export="beta") as server:
        uri = server.listen_unix(str(tmp_path / "l.sock"))
        server.start()
        assert uri.startswith("nbd+unix:///beta?")
        listing = json.loads(run("nbdinfo", "--list", "--json", uri).stdout)
        found = {e["export-name"]: e for e in listing["exports"]}
        assert found.keys() == {"alpha", "beta"}
        assert found["alpha"]["export-size"] == MiB and found["beta"]["description"] == "second"
        default = uri.replace("/beta?", "/?")
        with NbdClient.connect(default) as client:  # the empty name is the default export
            assert client.size == 2 * MiB
        with pytest.raises(NbdError, match="NBD_REP_ERR_UNKNOWN"):
            NbdClient.connect(uri.replace("/beta?", "/gamma?"))


def test_tcp_loopback(tmp_path: Path) -> None:
    need("qemu-img", "nbdinfo")
    data = holey(8 * MiB, [(MiB, MiB)])
    (tmp_path / "ref.raw").write_bytes(data)
    with NbdServer({"disk": MemoryExport("disk", data, [(MiB, MiB)])}) as server:
        uri = server.listen_tcp("127.0.0.1", 0)
        server.start()
        assert uri.startswith("nbd://127.0.0.1:") and not uri.startswith("nbd://127.0.0.1:0/")
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, tmp_path / "ref.raw")
        info = json.loads(run("nbdinfo", "--json", uri).stdout)
        assert info["exports"][0]["export-size"] == len(data)


def test_shutdown_closes_clients_and_removes_the_socket(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    server = NbdServer({"d": MemoryExport("d", bytes(MiB))})
    uri = server.listen_unix(str(sock))
    server.start()
    client = NbdClient.connect(uri, timeout=5)
    idle = socket.socket(socket.AF_UNIX)  # a client that never says a word
    idle.connect(str(sock))
    assert client.pread(4, 0) == bytes(4)
    done = threading.Event()
    threading.Thread(target=lambda: (server.shutdown(), done.set()), daemon=True).start()
    assert done.wait(10), "shutdown hung"
    assert not sock.exists()
    with pytest.raises(NbdError):
        client.pread(4, 0)
    client.close()
    idle.settimeout(5)
    while idle.recv(4096):  # the greeting, then end of file: the server hung up
        pass
    idle.close()
    server.shutdown()  # idempotent


def test_listen_refuses_a_live_socket_and_replaces_a_stale_one(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # the file stays behind, nobody listens
    with (
        NbdServer({"d": MemoryExport("d", bytes(4096))}) as first,
        NbdServer({"d": MemoryExport("d", bytes(4096))}) as second,
    ):
        first.listen_unix(str(sock))
        with pytest.raises(UsageError, match="another server"):
            second.listen_unix(str(sock))
        (tmp_path / "file").write_text("x")
        with pytest.raises(UsageError, match="not a socket"):
            second.listen_unix(str(tmp_path / "file"))
