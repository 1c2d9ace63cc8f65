"""strongroom serve: a point as a read-only NBD export that any NBD client reads
at once, by several clients at a time, on a unix socket or loopback TCP."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.block_servers import Background
from tests.helpers.images import (
    BS,
    KiB,
    MiB,
    assert_same_image,
    backup,
    needs,
    run,
    sparse_file,
    write_random,
)

pytestmark = needs("qemu-img", "qemu-io", "nbdinfo", "nbdcopy")

SIZE = 24 * MiB + 12 * KiB  # a short last block


def disk_and_point(tmp_path: Path, cli: CliRunner) -> tuple[Path, str]:
    disk = sparse_file(tmp_path / "disk.raw", SIZE)
    write_random(disk, 0, 3 * MiB, seed=1)
    write_random(disk, 9 * MiB + 5, 5 * MiB, seed=2)
    write_random(disk, SIZE - 20 * KiB, 20 * KiB, seed=3)
    return disk, backup(cli, disk, "--block-size", str(BS))["point_id"]


def serve(background: Callable[..., Background], point: str, *args: str) -> tuple[Background, str]:
    """Start `strongroom serve`; the URI it announces once it listens."""
    server = background("serve", point, "--json", *args)
    doc = server.next_json()
    assert doc is not None, server.wait()
    assert doc["message_type"] == "serving" and doc["point_id"].startswith(point)
    return server, str(doc["uri"])


def stop(server: Background) -> None:
    server.signal(signal.SIGTERM)
    rc, err = server.wait()
    assert rc == 0, err
    assert "Traceback" not in err, err


def test_serve_on_a_unix_socket(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, background: Callable[..., Background]
) -> None:
    disk, point = disk_and_point(tmp_path, cli)
    sock = tmp_path / "serve.sock"
    server, uri = serve(background, point, "--socket", str(sock))
    assert str(sock) in uri

    info = json.loads(run("nbdinfo", "--json", uri, timeout=30).stdout)
    (export,) = info["exports"]
    assert export["is_read_only"] is True
    assert export["export-size"] == SIZE
    assert_same_image(disk, uri)
    # Writes are refused.
    done = run("qemu-io", "-f", "raw", uri, "-c", "write -P 1 0 4k", check=False, timeout=30)
    assert done.returncode != 0 or "failed" in done.stdout + done.stderr
    # Four clients at once, two of each kind, read the same disk.
    copies = [tmp_path / f"copy{i}.raw" for i in range(4)]
    procs = [
        subprocess.Popen(["nbdcopy", uri, str(copies[0])]),
        subprocess.Popen(["nbdcopy", "--connections=2", uri, str(copies[1])]),
        subprocess.Popen(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(copies[2])]),
        subprocess.Popen(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(copies[3])]),
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    original = disk.read_bytes()
    for copy in copies:
        assert copy.read_bytes() == original, copy

    stop(server)
    assert not sock.exists()


def test_serve_on_loopback_tcp_any_port(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, background: Callable[..., Background]
) -> None:
    disk, point = disk_and_point(tmp_path, cli)
    server, uri = serve(background, point, "--port", "0")
    assert uri.startswith("nbd://127.0.0.1:") and not uri.endswith(":0/")
    copy = tmp_path / "copy.raw"
    run("nbdcopy", uri, copy, timeout=60)
    assert copy.read_bytes() == disk.read_bytes()
    stop(server)


def test_serve_needs_a_listening_place(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    _, point = disk_and_point(tmp_path, cli)
    result = cli("serve", point)
    assert result.rc == 2 and "--socket" in result.err


def test_serve_bounds_its_clients(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, background: Callable[..., Background]
) -> None:
    """--max-clients: one client too many is closed at once; --client-timeout: a
    client that never finishes the handshake frees its slot; real tools still read."""
    disk, point = disk_and_point(tmp_path, cli)
    sock = tmp_path / "serve.sock"
    limits = ("--max-clients", "2", "--client-timeout", "1.5")
    server, uri = serve(background, point, "--socket", str(sock), *limits)
    silent = [socket.socket(socket.AF_UNIX) for _ in range(3)]
    try:
        for s in silent:
            s.settimeout(5)
            s.connect(str(sock))
        greetings = [s.recv(18) for s in silent]
        assert [len(g) for g in greetings] == [18, 18, 0]  # the third: closed at once
        started = time.monotonic()
        assert [s.recv(1) for s in silent[:2]] == [b"", b""]  # dropped at the deadline
        assert time.monotonic() - started < 4
    finally:
        for s in silent:
            s.close()
    copy = tmp_path / "copy.raw"
    run("nbdcopy", uri, copy, timeout=60)
    assert copy.read_bytes() == disk.read_bytes()
    stop(server)


def test_serve_refuses_bad_limits(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    _, point = disk_and_point(tmp_path, cli)
    sock = str(tmp_path / "s.sock")
    for bad in (("--max-clients", "0"), ("--client-timeout", "0"), ("--idle-timeout", "-1")):
        result = cli("serve", point, "--socket", sock, *bad)
        assert result.rc == 2, result.err
