"""`strongroom server` for real: a repository made with `strongroom init` and
`backup`, the server started on a free loopback port with no terminal (so it
generates the first administrator's password and prints it once), then
signed in to over HTTP. SQLite catalog: the catalog's backends are the
in-process tests' business."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import socket
import ssl
import subprocess
import termios
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CliRunner
from tests.helpers.cli import strongroom_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*strongroom_command(), "server", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_up(proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}: {_text(log)}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"server did not answer: {_text(log)}")


def _text(log: Path) -> str:
    return log.read_text() if log.exists() else "(on the terminal)"


def admin_client(base: str, log: Path, timeout: float = 5.0) -> httpx.Client:
    """The API signed in as the administrator the server made at its first
    start (its password: the one line the server printed), CSRF header set."""
    line = next(ln for ln in log.read_text().splitlines() if "shown only now" in ln)
    http = httpx.Client(base_url=base, timeout=timeout)
    signed = http.post("/api/v1/session", json={"name": "admin", "password": line.split()[-1]})
    http.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
    return http


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


def test_the_server_serves_the_repositorys_points_to_its_first_administrator(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("init").rc == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello server\n")
    assert cli("backup", str(src), "--tag", "web").rc == 0
    point_id = cli("snapshots", "--json").json()[0]["id"]

    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _start(env, port, log)
    try:
        _wait_up(proc, base, log)
        printed = [ln for ln in log.read_text().splitlines() if "shown only now" in ln]
        assert len(printed) == 1 and printed[0].startswith("administrator admin created")
        password = printed[0].rsplit(" ", 1)[1]
        with httpx.Client(base_url=base) as http:
            wrong = http.post("/api/v1/session", json={"name": "admin", "password": "x" * 12})
            assert wrong.status_code == 401
            signed = http.post("/api/v1/session", json={"name": "admin", "password": password})
            assert signed.status_code == 200, signed.text
            points = http.get("/api/v1/points").json()
            assert [p["id"] for p in points] == [point_id]
            assert points[0]["tags"] == ["web"]
            csrf = {"X-CSRF-Token": signed.json()["csrf_token"]}
            assert http.delete("/api/v1/session", headers=csrf).status_code == 204
    finally:
        assert _stop(proc) == 0, log.read_text()
    assert password not in log.read_text().replace(printed[0], "")  # printed once, no more

    # a second start finds the administrator: no new password printed
    log2 = tmp_path / "server2.log"
    proc = _start(env, port, log2)
    try:
        _wait_up(proc, base, log2)
    finally:
        _stop(proc)
    assert "shown only now" not in log2.read_text()


def test_a_bad_listen_address_or_half_tls_is_one_line(cli: CliRunner) -> None:
    bad = cli("server", "--listen", "nowhere")
    assert bad.rc == 2 and "ADDRESS:PORT" in bad.err and "Traceback" not in bad.err
    cert = os.devnull
    half = cli("server", "--tls-cert", cert)
    assert half.rc == 2 and "--tls-key" in half.err


def _read_until(fd: int, needle: bytes, seconds: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"no {needle!r} on the terminal: {seen!r}")
        seen += os.read(fd, 4096)
    return seen


def test_on_a_terminal_the_first_administrators_password_is_asked_for(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("init").rc == 0
    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [*strongroom_command(), "server", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    try:
        _read_until(master, b"generate one)")
        os.write(master, b"typed admin password\n")
        _read_until(master, b"epeat")
        os.write(master, b"typed admin password\n")
        shown = _read_until(master, b"starting on")
        assert b"typed admin password" not in shown and b"shown only now" not in shown
        base = f"http://127.0.0.1:{port}"
        _wait_up(proc, base, tmp_path / "no-log")
        body = {"name": "admin", "password": "typed admin password"}
        assert httpx.post(f"{base}/api/v1/session", json=body, timeout=10).status_code == 200
    finally:
        code = _stop(proc)
        rest = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                rest += os.read(master, 4096)
            except OSError:
                break
        os.close(master)
    assert code == 0, rest


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_with_tls_the_server_speaks_https_and_the_cookie_is_secure(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("init").rc == 0
    cert, key = _self_signed(tmp_path)
    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*strongroom_command(), "server", "--listen", f"127.0.0.1:{port}",
             "--tls-cert", str(cert), "--tls-key", str(key)],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"{base}/api/v1/health", verify=trust, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        password = next(ln for ln in log.read_text().splitlines() if "shown only now" in ln).rsplit(
            " ", 1
        )[1]
        with httpx.Client(base_url=base, verify=trust) as http:
            signed = http.post("/api/v1/session", json={"name": "admin", "password": password})
            assert signed.status_code == 200
            assert "secure" in signed.headers["set-cookie"].lower()
            assert http.get("/api/v1/me").json()["name"] == "admin"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)  # no plain HTTP
    finally:
        assert _stop(proc) == 0, log.read_text()
