"""A throwaway OpenSSH server on loopback for the SFTP backend's tests.

Its own host key, a user key for root in its own authorized_keys, and a client
config file (`Host strongroom-test`: the port, the identity, a known_hosts
holding only this server's key, StrictHostKeyChecking) that the tests hand to
`ssh` through STRONGROOM_SFTP_ARGS="-F FILE": the user's own ~/.ssh stays
untouched, and the backend honours whatever config ssh is given.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST_ALIAS = "strongroom-test"


def available() -> str | None:
    """None if the server can run here, else why not."""
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "openssh-server / openssh-client not installed"
    if os.geteuid() != 0:
        return "sshd's privilege separation needs root"
    return None


@dataclass
class SshServer:
    folder: Path
    port: int
    client_config: Path
    identity: Path

    @property
    def env(self) -> dict[str, str]:
        return {"STRONGROOM_SFTP_ARGS": f"-F {self.client_config}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def ssh_server(folder: Path) -> Iterator[SshServer]:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
    _keygen(folder / "host_key")
    _keygen(folder / "id_user")
    (folder / "authorized_keys").write_text((folder / "id_user.pub").read_text())
    port = _free_port()
    host_pub = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder}/host_key\n"
        f"PidFile {folder}/sshd.pid\nAuthorizedKeysFile {folder}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    config = folder / "ssh_config"
    config.write_text(
        f"Host {HOST_ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {folder}/id_user\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {folder}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n"
    )
    log = (folder / "sshd.log").open("wb")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield SshServer(folder, port, config, folder / "id_user")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
