"""The distributed parts a server benchmark runs on, started in the benchmark's folder: a Ceph
RADOS Gateway (the project's ``.ci/ceph-rgw-up.sh``/``ceph-rgw-down.sh``, run directly) and a
throwaway PostgreSQL cluster (Debian's ``initdb``/``pg_ctl``, run as ``nobody`` because
PostgreSQL refuses root; a unix socket only, no TCP port). Each is stopped in ``close``.

Also a running process's own figures (``/proc/PID``): CPU seconds so far, and its peak RSS
since the last ``reset_peak`` (``clear_refs`` 5 resets ``VmHWM``), so one long-lived server's
cost is measured per scenario.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from harness.spawn import log

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / ".ci"
CEPH_TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "curl")
_EXPORT = re.compile(r"^export ([A-Z0-9_]+)=(.*)$")


class Gateway:
    """A Ceph RADOS Gateway on 127.0.0.1 with an S3 user (``env``: its AWS_* settings)."""

    def __init__(self, folder: Path) -> None:
        missing = [t for t in CEPH_TOOLS if shutil.which(t) is None]
        if missing:
            raise SystemExit(
                f"not installed: {', '.join(missing)} (apt-get install ceph-mon ceph-osd "
                "radosgw ceph-common curl)"
            )
        self.folder = folder
        done = subprocess.run(
            ["bash", str(CI / "ceph-rgw-up.sh"), str(folder)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MEMSTORE_BYTES": str(12 << 30)},
        )
        self.env = {
            m[1]: m[2].strip("'\"")
            for m in (_EXPORT.match(ln.strip()) for ln in done.stdout.splitlines())
            if m
        }
        if done.returncode or "AWS_ENDPOINT_URL" not in self.env:
            raise RuntimeError(f"ceph-rgw-up.sh failed: {done.stderr.strip()[-800:]}")
        self.endpoint = self.env["AWS_ENDPOINT_URL"]
        self.env["AWS_EC2_METADATA_DISABLED"] = "true"

    def purge(self, bucket: str) -> None:
        """Delete a bucket and its objects (the memstore OSD holds them in RAM):
        at once, not by RGW's garbage collector, which runs hours later. With
        the collector, a full 512 MiB run's second round held the first's
        deleted objects too, and the OSD was killed for memory (21 GiB)."""
        subprocess.run(
            [
                "radosgw-admin",
                "-c",
                self.env["CEPH_CONF"],
                "bucket",
                "rm",
                f"--bucket={bucket}",
                "--purge-objects",
                "--bypass-gc",
            ],
            capture_output=True,
            check=False,
        )

    def close(self) -> None:
        subprocess.run(
            ["bash", str(CI / "ceph-rgw-down.sh"), str(self.folder), "--fast"],
            capture_output=True,
            check=False,
        )


def _as_nobody(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )


class Postgres:
    """A PostgreSQL cluster in ``folder`` (owned by nobody), listening on a socket there."""

    def __init__(self, folder: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found or os.geteuid() != 0 or shutil.which("runuser") is None:
            raise SystemExit("needs root and PostgreSQL's server (apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        self.data, self.socket = folder / "data", folder
        done = _as_nobody(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        )
        if done.returncode:
            raise RuntimeError(f"initdb: {done.stderr.strip()}")
        done = _as_nobody(
            self.bin / "pg_ctl",
            "-D",
            self.data,
            "-l",
            folder / "server.log",
            "-w",
            "-o",
            f"-k {folder} -c listen_addresses='' -c max_connections=200",
            "start",
        )
        if done.returncode:
            raise RuntimeError(f"pg_ctl start: {done.stdout.strip()}")

    def database(self, name: str) -> str:
        """A new, empty database; its URL for STRONGROOM_CATALOG."""
        done = _as_nobody(self.bin / "createdb", "-h", self.socket, "-U", "postgres", name)
        if done.returncode:
            raise RuntimeError(f"createdb: {done.stderr.strip()}")
        return f"postgresql://postgres@/{name}?host={self.socket}&port=5432"

    def close(self) -> None:
        _as_nobody(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        log(f"warning: cannot reset the peak RSS of {pid}")


def peak_rss_kib(pid: int) -> int:
    """``VmHWM``: the process's peak RSS since its start or the last ``reset_peak``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
