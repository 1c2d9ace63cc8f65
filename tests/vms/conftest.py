"""VMs on a cluster that shares their disks: the real block layer, real writers.

A "VM" here is a qemu-storage-daemon holding the VM's disks (qcow2 files on a
folder that stands for the shared storage), each exported writable over NBD,
with a QMP monitor for strongroom and a second one for the test. Cluster hosts
are writer processes (`writer.py`) writing sequence-stamped records over NBD.
strongroom finds the VM through a `[vm.NAME]` table of the file that
STRONGROOM_CONFIG names, and backs it up into a repository made by
`strongroom init`.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from strongroom.config import VmSpec, load_settings
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services.vm_backup import VmBackupResult, backup_vm
from strongroom.services.vm_restore import restore_vm
from strongroom.services.vms import vm_points
from strongroom.sources.qmp import QmpClient
from tests.conftest import open_local_repository
from tests.helpers.block_servers import stop_process, wait_for_sockets
from tests.helpers.cli import CliResult, run_cli, strongroom_command
from tests.helpers.images import START_TIMEOUT, MiB, needs, qemu_io, run
from tests.vms.writer import RECORD, Write, parse, read_log

VM = "vm1"
DISKS = ("disk0", "disk1")
SIZE = 16 * MiB
WRITER = Path(__file__).with_name("writer.py")
PREFIX = "strongroom-"  # the lineage of strongroom's dirty bitmaps

QEMU = needs("qemu-img", "qemu-io", "qemu-storage-daemon")


# --- the block layer ---------------------------------------------------------


class VmDaemon:
    """A qemu-storage-daemon running the disks of one VM.

    Node `disk<i>` (qcow2, on file node `f<i>`) is exported writable as NBD
    export `disk<i>`. Strongroom's QMP monitor and the NBD server listen on unix
    sockets, or, with `tcp=(host, nbd_port, qmp_port)`, on TCP (the daemon then
    runs in network namespace `netns`). The test's own QMP monitor is always a
    unix socket: a path works across network namespaces.
    """

    def __init__(
        self,
        shared: Path,
        rundir: Path,
        disks: Sequence[str] = DISKS,
        *,
        netns: str | None = None,
        tcp: tuple[str, int, int] | None = None,
    ) -> None:
        self.shared = shared
        self.dir = rundir
        self.disks = list(disks)
        self.netns = netns
        self.tcp = tcp
        shared.mkdir(parents=True, exist_ok=True)
        rundir.mkdir(parents=True, exist_ok=True)
        self.nbd_socket = rundir / "nbd.sock"
        self.qmp_socket = rundir / "qmp.sock"
        self.control_socket = rundir / "qmp-test.sock"
        self.log = rundir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_prefix: list[str] = []  # how tools reach a TCP daemon (ip netns exec)

    def file(self, disk: str) -> Path:
        return self.shared / f"{disk}.qcow2"

    def create(self, size: int = SIZE, fill: int | None = None) -> VmDaemon:
        """Create every disk (offline); with `fill`, written whole with that byte."""
        for disk in self.disks:
            run("qemu-img", "create", "-q", "-f", "qcow2", self.file(disk), size)
            if fill is not None:
                qemu_io(self.file(disk), f"write -P {fill} 0 {size}")
        return self

    @property
    def qmp(self) -> str:
        """Strongroom's QMP address, as the config file gives it."""
        if self.tcp:
            return f"tcp:{self.tcp[0]}:{self.tcp[2]}"
        return f"unix:{self.qmp_socket}"

    @property
    def nbd(self) -> str:
        """The NBD server, as the config file gives it (the export part is ignored)."""
        if self.tcp:
            return f"nbd://{self.tcp[0]}:{self.tcp[1]}"
        return f"nbd+unix:///?socket={self.nbd_socket}"

    def uri(self, disk: str) -> str:
        if self.tcp:
            return f"nbd://{self.tcp[0]}:{self.tcp[1]}/{disk}"
        return f"nbd+unix:///{disk}?socket={self.nbd_socket}"

    def start(self) -> VmDaemon:
        for sock in (self.nbd_socket, self.qmp_socket, self.control_socket):
            sock.unlink(missing_ok=True)
        args = ["qemu-storage-daemon"]
        for i, disk in enumerate(self.disks):
            args += ["--blockdev", f"driver=file,node-name=f{i},filename={self.file(disk)}"]
            args += ["--blockdev", f"driver=qcow2,node-name={disk},file=f{i}"]
        if self.tcp:
            host, nbd_port, qmp_port = self.tcp
            args += ["--nbd-server", f"addr.type=inet,addr.host={host},addr.port={nbd_port}"]
            qmp_chardev = f"socket,id=m0,host={host},port={qmp_port},server=on,wait=off"
        else:
            args += ["--nbd-server", f"addr.type=unix,addr.path={self.nbd_socket}"]
            qmp_chardev = f"socket,id=m0,path={self.qmp_socket},server=on,wait=off"
        for i, disk in enumerate(self.disks):
            args += ["--export", f"type=nbd,id=e{i},node-name={disk},name={disk},writable=on"]
        args += ["--chardev", qmp_chardev, "--monitor", "chardev=m0"]
        args += ["--chardev", f"socket,id=m1,path={self.control_socket},server=on,wait=off"]
        args += ["--monitor", "chardev=m1"]
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        waiting = [self.control_socket] + ([] if self.tcp else [self.nbd_socket, self.qmp_socket])
        wait_for_sockets(self.proc, waiting, self.log)
        # The daemon answers QMP only once every option is in place (the TCP
        # listeners included): one round trip on the test's monitor proves it.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with self.control() as qmp:
                    qmp.execute("query-block-exports")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def crash(self) -> None:
        """SIGKILL: the persistent bitmaps stay marked in use (inconsistent on restart)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @contextmanager
    def control(self) -> Iterator[QmpClient]:
        with QmpClient(str(self.control_socket), timeout=30) as qmp:
            yield qmp

    def bitmaps(self, disk: str) -> list[dict[str, Any]]:
        """The disk's named dirty bitmaps (a running backup job adds anonymous ones)."""
        with self.control() as qmp:
            nodes = qmp.execute("query-named-block-nodes", {"flat": True})
        (node,) = [n for n in nodes if n.get("node-name") == disk]
        return [b for b in node.get("dirty-bitmaps") or [] if b.get("name")]

    def our_bitmaps(self, disk: str) -> list[dict[str, Any]]:
        return [b for b in self.bitmaps(disk) if str(b["name"]).startswith(PREFIX)]

    def leftovers(self) -> list[str]:
        """Nodes, exports and jobs beyond the VM's own: what backups left behind."""
        base = {f"f{i}" for i in range(len(self.disks))} | set(self.disks)
        with self.control() as qmp:
            nodes = qmp.execute("query-named-block-nodes", {"flat": True})
            exports = qmp.execute("query-block-exports")
            jobs = qmp.execute("query-block-jobs")
        found = [
            f"node {n['node-name']}"
            for n in nodes
            if n["node-name"] not in base and not n["node-name"].startswith("#")
        ]
        found += [f"export {e['id']}" for e in exports if not e["id"].startswith("e")]
        found += [f"job {j['device']}" for j in jobs]
        return sorted(found)

    def write(self, disk: str, *commands: str) -> None:
        """qemu-io commands on the disk's export (a writer host's direct block I/O)."""
        args: list[object] = [*self.client_prefix, "qemu-io", "-f", "raw"]
        for command in commands:
            args += ["-c", command]
        done = run(*args, self.uri(disk))
        assert "failed" not in done.stdout + done.stderr, done.stdout + done.stderr

    def difference(self, disk: str, raw: Path) -> str | None:
        """None when the raw file reads as the disk does now (over NBD), else why not."""
        done = run(
            *self.client_prefix, "qemu-img", "compare", "-f", "raw", "-F", "raw",
            raw, self.uri(disk), check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return None
        if done.returncode == 1:
            return done.stdout.strip()
        raise AssertionError(f"qemu-img compare {raw} {disk}: {done.stderr.strip()}")


# --- writer hosts ------------------------------------------------------------


class Writer:
    """One `writer.py` process (see there); `prefix` runs it elsewhere (ip netns exec)."""

    def __init__(
        self,
        wid: int,
        uris: Sequence[str],
        offset: int,
        slots: int,
        log: Path,
        pause: float = 0.0005,
        prefix: Sequence[str] = (),
    ) -> None:
        self.id = wid
        self.offset = offset
        self.slots = slots
        self.log = log
        args = [*prefix, sys.executable, str(WRITER), "--id", str(wid)]
        for uri in uris:
            args += ["--uri", uri]
        args += ["--offset", str(offset), "--slots", str(slots), "--log", str(log)]
        args += ["--pause", str(pause)]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            err = self.kill()
            raise AssertionError(f"writer {self.id} did not start: {err}")

    def stop(self) -> list[Write]:
        """SIGTERM; the writer finishes the record in hand and writes its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"writer {self.id} did not stop") from None
        assert self.proc.returncode == 0, f"writer {self.id}: {err.decode(errors='replace')}"
        return read_log(str(self.log))

    def kill(self) -> str:
        """End the writer at once (teardown; idempotent); its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            _, err = self.proc.communicate(timeout=30)
        except ValueError:  # already collected by stop()
            return ""
        return err.decode(errors="replace")


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[Callable[..., Writer]]:
    """`writers(wid, uris, offset, slots, ...)` starts a writer; all are killed at teardown."""
    started: list[Writer] = []

    def start(wid: int, uris: Sequence[str], offset: int, slots: int, **kwargs: Any) -> Writer:
        writer = Writer(wid, uris, offset, slots, tmp_path / f"writer-{wid}.log", **kwargs)
        started.append(writer)
        return writer

    yield start
    for writer in started:
        writer.kill()


def read_slots(raw: Path, offset: int, count: int) -> list[tuple[int, int] | None]:
    """The records of `count` slots from `offset` of a raw image."""
    with open(raw, "rb") as f:
        f.seek(offset)
        data = f.read(count * RECORD)
    return [parse(data[i * RECORD : (i + 1) * RECORD]) for i in range(count)]


# --- strongroom --------------------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(path: Path, vms: dict[str, dict[str, object]]) -> Path:
    lines = []
    for name, table in vms.items():
        lines.append(f"[vm.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Job:
    """A `strongroom` (or other) process in a session of its own: killed as a group."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            list(args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def wait(self, timeout: float = 120) -> CliResult:
        out, err = self.proc.communicate(timeout=timeout)
        return CliResult(
            self.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started (its hook's shell, sleep)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.communicate(timeout=30)


class Cluster:
    """One VM (`VM`) on a running block layer, its config file and a repository."""

    def __init__(self, tmp: Path, daemon: VmDaemon, repo_path: Path) -> None:
        self.tmp = tmp
        self.daemon = daemon
        self.repo_path = repo_path
        self.config = tmp / "config.toml"
        self.scratch = daemon.shared / "scratch"
        self.table: dict[str, object] = {}
        self.jobs: list[Job] = []
        self.configure()

    def configure(self, **extra: object) -> VmSpec:
        """Rewrite the VM's table: the block layer's endpoints plus `extra`."""
        self.table = {
            "qmp": self.daemon.qmp,
            "nbd": self.daemon.nbd,
            "disks": self.daemon.disks,
            "scratch": str(self.scratch),
            **extra,
        }
        write_config(self.config, {VM: self.table})
        return self.spec()

    def spec(self) -> VmSpec:
        return load_settings(path=self.config).vms[VM]

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["STRONGROOM_REPO"] = str(self.repo_path)
        env["STRONGROOM_CONFIG"] = str(self.config)
        return env

    def cli(self, *args: str, prefix: Sequence[str] = (), timeout: float = 120) -> CliResult:
        return run_cli(
            list(args),
            self.env,
            timeout=timeout,
            command=[*prefix, *strongroom_command()] if prefix else None,
        )

    def start(self, *args: str, prefix: Sequence[str] = ()) -> Job:
        """`strongroom ARGS` in the background."""
        job = Job([*prefix, *strongroom_command(), *args], self.env)
        self.jobs.append(job)
        return job

    def backup_cli(self, *args: str, prefix: Sequence[str] = ()) -> dict[str, Any]:
        """`strongroom backup --vm VM --json ARGS`: its summary (must succeed)."""
        result = self.cli("backup", "--vm", VM, "--json", *args, prefix=prefix)
        assert result.rc == 0, result.err
        assert "Traceback" not in result.err, result.err
        return result.summary()

    @contextmanager
    def repository(self) -> Iterator[Repository]:
        repo = open_local_repository(self.repo_path)
        try:
            yield repo
        finally:
            repo.close()

    def backup(self, **kwargs: Any) -> VmBackupResult:
        """backup_vm in this process (a repository opened for it, as the CLI does)."""
        with self.repository() as repo:
            return backup_vm(repo, self.spec(), **kwargs)

    def points(self) -> list[RecoveryPoint]:
        with self.repository() as repo:
            return vm_points(repo, VM)

    def restore(self, point_id: str, dest: Path) -> dict[str, Path]:
        """The point's disks as raw files in `dest` (restore_vm in this process)."""
        with self.repository() as repo:
            (point,) = [p for p in vm_points(repo, VM) if p.id == point_id]
            done = restore_vm(repo, point, str(dest))
        for _, _, summary in done:
            assert not summary.damaged, summary.damaged
        return {disk: Path(where) for disk, where, _ in done}

    def assert_point_is_now(self, point_id: str) -> None:
        """The point's disks equal what the daemon's disks read now (no writer runs)."""
        dest = self.tmp / f"restored-{point_id[:12]}"
        restored = self.restore(point_id, dest)
        assert sorted(restored) == sorted(self.daemon.disks)
        for disk, raw in restored.items():
            diff = self.daemon.difference(disk, raw)
            assert diff is None, f"point {point_id[:8]}, disk {disk}: {diff}"
        shutil.rmtree(dest)

    def assert_clean(self) -> None:
        """No view left in the block layer or the scratch folder; one bitmap of ours
        per disk, recording."""
        assert self.daemon.leftovers() == []
        assert not self.scratch.exists() or os.listdir(self.scratch) == []
        for disk in self.daemon.disks:
            ours = self.daemon.our_bitmaps(disk)
            assert len(ours) == 1, (disk, ours)
            assert ours[0]["recording"] and not ours[0].get("inconsistent"), ours

    def close(self) -> None:
        for job in self.jobs:
            job.kill_group()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short folder for unix sockets (paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="srvm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_cluster(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Cluster]]:
    """`make_cluster(size=SIZE, fill=None, disks=DISKS, netns=None, tcp=None)`: a running
    VM (see VmDaemon), its config file (STRONGROOM_CONFIG) and an initialized
    repository; stopped at teardown."""
    made: list[Cluster] = []

    def make(
        size: int = SIZE,
        fill: int | None = None,
        disks: Sequence[str] = DISKS,
        netns: str | None = None,
        tcp: tuple[str, int, int] | None = None,
    ) -> Cluster:
        daemon = VmDaemon(tmp_path / "shared", run_dir / "qsd", disks, netns=netns, tcp=tcp)
        daemon.create(size, fill).start()
        cluster = Cluster(tmp_path, daemon, tmp_path / "repo")
        made.append(cluster)
        monkeypatch.setenv("STRONGROOM_CONFIG", str(cluster.config))
        init = cluster.cli("init")
        assert init.rc == 0, init.err
        return cluster

    yield make
    for cluster in made:
        cluster.close()
        cluster.daemon.stop()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """Two empty 16 MiB disks."""
    return make_cluster()


def hostname_prefix(name: str) -> list[str]:
    """A command prefix running the command as host `name` (its own UTS namespace)."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name]


@functools.cache
def can_rename_host() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [*hostname_prefix("sr-probe"), "hostname"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0 and probe.stdout.strip() == "sr-probe"


def this_host() -> str:
    return socket.gethostname()
