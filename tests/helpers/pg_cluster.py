"""A throwaway PostgreSQL cluster from Debian's packages, run as `nobody`.

PostgreSQL refuses to run as root, so the cluster's folders belong to
`nobody` and every server program runs through `runuser -u nobody`. The
server listens on a unix socket in a private folder only (no TCP port to
collide with another test or worker). initdb --no-sync: about 2 s.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PORT = 5432  # only names the socket file, inside a private folder


def bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def as_nobody(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )


def owned_by_nobody(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwnam("nobody")
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, mode)
    return path


@dataclass
class Cluster:
    bin: Path
    data: Path
    socket_dir: Path
    log: Path
    durable: bool = True  # a copy that only answers a question needs no fsync

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={PORT} user=postgres dbname=postgres"

    @classmethod
    def create(cls, bin: Path, data: Path, socket_dir: Path, log: Path) -> Cluster:
        done = as_nobody(
            bin / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8", "--locale=C", "--no-instructions",
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"initdb: {done.stderr.strip()}")
        return cls(bin, data, socket_dir, log)

    def start(self) -> None:
        owned_by_nobody(self.socket_dir)
        options = f"-k {self.socket_dir} -p {PORT} -c listen_addresses=''"
        if not self.durable:
            options += " -c fsync=off"
        done = as_nobody(
            self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        if done.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start: {done.stdout.strip()} {log.strip()[-2000:]}")

    def stop(self) -> None:
        as_nobody(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def copy_to(self, target: Path, socket_dir: Path, log: Path) -> Cluster:
        """`cp -a` of the data directory (what a snapshot of its file system holds)."""
        subprocess.run(["cp", "-a", str(self.data), str(target)], check=True)
        return Cluster(self.bin, target, socket_dir, log, durable=False)

    def controldata(self) -> dict[str, str]:
        done = as_nobody(self.bin / "pg_controldata", "-D", self.data)
        pairs = (line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def available() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (a loop-mounted file system, and runuser)"
    if bin_dir() is None:
        return "PostgreSQL's server programs are not installed (Debian package postgresql)"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    return None
