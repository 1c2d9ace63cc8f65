"""Block image tests: real qemu tools, a storage daemon driven over QMP, nbdkit.

Every check compares what strongroom restored with what the disk held at the
backup's instant (`qemu-img compare`, byte for byte), and holds the trackers
to the blocks the test wrote: a tracker that reads more than it must is slow,
one that reads less loses data.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from strongroom.sources.qmp import QmpClient
from tests.conftest import CliRunner
from tests.helpers.cli import CliResult, strongroom_command

KiB = 1024
MiB = 1024 * KiB
BS = 64 * KiB  # --block-size of most tests: many blocks in small images
START_TIMEOUT = 20.0


def needs(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every tool is installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


QEMU = needs("qemu-img", "qemu-io", "qemu-nbd")


# --- running tools -----------------------------------------------------------


def run(*args: object, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in args)} failed ({done.returncode}): "
            f"{done.stderr or done.stdout}"
        )
    return done


def qemu_io(target: object, *commands: str, fmt: str = "qcow2") -> None:
    """Run qemu-io commands on an image (or, with fmt="raw", an NBD URI)."""
    args: list[object] = ["qemu-io", "-f", fmt]
    for command in commands:
        args += ["-c", command]
    done = run(*args, target)
    assert "failed" not in done.stdout + done.stderr, done.stdout + done.stderr


def image_info(path: object) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)
    return info


def file_bitmaps(path: object) -> list[dict[str, Any]]:
    """The persistent dirty bitmaps of a qcow2 file, as `qemu-img info` shows them."""
    data = (image_info(path).get("format-specific") or {}).get("data") or {}
    return list(data.get("bitmaps") or [])


def ours(names: Iterable[str], prefix: str = "strongroom-") -> list[str]:
    return sorted(n for n in names if n.startswith(prefix))


def virtual_size(path: object, fmt: str) -> int:
    out = run("qemu-img", "info", "-U", "-f", fmt, "--output=json", path).stdout
    return int(json.loads(out)["virtual-size"])


def image_difference(a: object, b: object, fmt_a: str = "raw", fmt_b: str = "raw") -> str | None:
    """None when the two disks read the same (and have the same size), else why not."""
    size_a, size_b = virtual_size(a, fmt_a), virtual_size(b, fmt_b)
    if size_a != size_b:
        return f"sizes differ: {size_a} != {size_b}"
    done = run("qemu-img", "compare", "-U", "-f", fmt_a, "-F", fmt_b, a, b, check=False)
    if done.returncode == 0:
        return None
    if done.returncode == 1:
        return done.stdout.strip()
    raise AssertionError(f"qemu-img compare {a} {b}: {done.stderr.strip()}")


def assert_same_image(a: object, b: object, fmt_a: str = "raw", fmt_b: str = "raw") -> None:
    diff = image_difference(a, b, fmt_a, fmt_b)
    assert diff is None, f"{b} is not {a}: {diff}"


def to_raw(src: object, dest: Path, fmt: str = "qcow2") -> Path:
    """What a disk reads now, as a raw file (works while the image is in use)."""
    run("qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", src, dest)
    return dest


def touched(writes: Iterable[tuple[int, int]], block_size: int = BS) -> set[int]:
    """Blocks that (offset, length) writes touch."""
    out: set[int] = set()
    for offset, length in writes:
        out.update(range(offset // block_size, (offset + length - 1) // block_size + 1))
    return out


def write_random(path: Path, offset: int, length: int, seed: int) -> bytes:
    """Overwrite part of a raw file with random bytes (the file keeps its other bytes)."""
    data = random.Random(seed).randbytes(length)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    return data


def sparse_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


# --- strongroom --------------------------------------------------------------


def backup(cli: CliRunner, source: object, *args: str) -> dict[str, Any]:
    """`strongroom backup --image SOURCE --json ARGS`; its summary (must succeed)."""
    result = cli("backup", "--image", str(source), "--json", *args)
    assert result.rc == 0, result.err
    assert "Traceback" not in result.err, result.err
    return result.summary()


def restore(cli: CliRunner, point: str, target: object, *args: str) -> CliResult:
    result = cli("restore", point, "--target", str(target), "--json", *args)
    assert result.rc == 0, result.err
    return result


def restore_and_compare(
    cli: CliRunner, point: str, expected: object, tmp: Path, fmt: str = "raw"
) -> Path:
    """Restore `point` to a raw file below `tmp` and compare it with `expected`."""
    target = tmp / f"restored-{point[:12]}.raw"
    restore(cli, point, target)
    assert_same_image(expected, target, fmt, "raw")
    return target


def list_points(cli: CliRunner) -> list[dict[str, Any]]:
    result = cli("snapshots", "--json")
    assert result.rc == 0, result.err
    points: list[dict[str, Any]] = result.json()
    return points


def check_repository(cli: CliRunner, read_data: bool = True) -> None:
    result = cli("check", *(["--read-data"] if read_data else []))
    assert result.rc == 0, f"check failed:\n{result.out}\n{result.err}"
    assert "Traceback" not in result.err


# --- a running block layer ---------------------------------------------------


def _accepts(path: Path) -> bool:
    """True once a unix socket accepts connections (its file appears at bind(),
    a moment before listen(): existing is not enough)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def _wait_for_sockets(proc: subprocess.Popen[bytes], paths: list[Path], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(paths)
    while waiting:
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}): {log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{waiting} not listening after {START_TIMEOUT} s")
        waiting = [p for p in waiting if not _accepts(p)]
        if waiting:
            time.sleep(0.01)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class StorageDaemon:
    """A qemu-storage-daemon running one qcow2 disk: node `disk0` exported
    writable as NBD export `disk0`, and two QMP monitors, one for strongroom
    (`qmp`) and one for the test (`control()`), so that the test can watch the
    block layer while a backup holds its own session."""

    NODE = "disk0"
    BASE_NODES = frozenset({"f0", "disk0"})

    def __init__(self, disk: Path, workdir: Path, fmt: str = "qcow2") -> None:
        self.disk = disk
        self.fmt = fmt
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.nbd_socket = workdir / "nbd.sock"
        self.qmp = workdir / "qmp.sock"
        self.control_socket = workdir / "qmp-test.sock"
        self.nbd_uri = f"nbd+unix:///{self.NODE}?socket={self.nbd_socket}"
        self.log = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StorageDaemon:
        for sock in (self.nbd_socket, self.qmp, self.control_socket):
            sock.unlink(missing_ok=True)
        args = [
            "qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=f0,filename={self.disk}",
            "--blockdev", f"driver={self.fmt},node-name={self.NODE},file=f0",
            "--nbd-server", f"addr.type=unix,addr.path={self.nbd_socket}",
            "--export", f"type=nbd,id=e0,node-name={self.NODE},name={self.NODE},writable=on",
            "--chardev", f"socket,id=m0,path={self.qmp},server=on,wait=off",
            "--monitor", "chardev=m0",
            "--chardev", f"socket,id=m1,path={self.control_socket},server=on,wait=off",
            "--monitor", "chardev=m1",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        _wait_for_sockets(self.proc, [self.nbd_socket, self.qmp, self.control_socket], self.log)
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def crash(self) -> None:
        """SIGKILL: persistent bitmaps stay marked in use (inconsistent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def write(self, *commands: str) -> None:
        qemu_io(self.nbd_uri, *commands, fmt="raw")

    def snapshot(self, dest: Path) -> Path:
        """What the disk reads now, as a raw file (over NBD: no writer runs meanwhile)."""
        run("qemu-img", "convert", "-f", "raw", "-O", "raw", self.nbd_uri, dest)
        return dest

    @contextmanager
    def control(self) -> Iterator[QmpClient]:
        with QmpClient(str(self.control_socket), timeout=30) as qmp:
            yield qmp

    def bitmaps(self) -> list[dict[str, Any]]:
        with self.control() as qmp:
            nodes = qmp.execute("query-named-block-nodes", {"flat": True})
        (disk,) = [n for n in nodes if n.get("node-name") == self.NODE]
        return list(disk.get("dirty-bitmaps") or [])

    def bitmap_names(self) -> list[str]:
        """Named bitmaps of the disk (a running backup job adds an anonymous one)."""
        return [str(b["name"]) for b in self.bitmaps() if b.get("name")]

    def leftovers(self) -> list[str]:
        """Block nodes, exports and jobs beyond the disk's own: what a backup left."""
        with self.control() as qmp:
            nodes = qmp.execute("query-named-block-nodes", {"flat": True})
            exports = qmp.execute("query-block-exports")
            jobs = qmp.execute("query-block-jobs")
        found = [
            f"node {n['node-name']}"
            for n in nodes
            if n["node-name"] not in self.BASE_NODES and not n["node-name"].startswith("#")
        ]
        found += [f"export {e['id']}" for e in exports if e["id"] != "e0"]
        found += [f"job {j['device']}" for j in jobs]
        return found


@pytest.fixture
def storage_daemon(tmp_path: Path) -> Iterator[Callable[..., StorageDaemon]]:
    """`storage_daemon(disk)` starts a daemon on a qcow2 file; all stop at teardown."""
    started: list[StorageDaemon] = []

    def start(disk: Path, name: str = "qsd", fmt: str = "qcow2") -> StorageDaemon:
        daemon = StorageDaemon(disk, tmp_path / name, fmt)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


def live_backup(cli: CliRunner, daemon: StorageDaemon, scratch: Path, *args: str) -> dict[str, Any]:
    return backup(cli, daemon.nbd_uri, "--qmp", str(daemon.qmp), "--scratch", str(scratch), *args)


class BackgroundWriter:
    """One qemu-io fed by a thread with pattern writes (and some zero writes) at
    random places of an NBD export, until `stop()`; every command completes
    before `stop()` returns."""

    def __init__(
        self, uri: str, size: int, seed: int, first_pattern: int = 1, pause: float = 0.002
    ) -> None:
        self.uri = uri
        self.pause = pause
        self.size = size
        self.rng = random.Random(seed)
        self.pattern = first_pattern
        self.writes = 0
        self._halt = threading.Event()
        self._proc = subprocess.Popen(
            ["qemu-io", "-f", "raw", uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _command(self) -> str:
        length = self.rng.choice((4, 16, 64, 100, 192)) * KiB
        offset = self.rng.randrange(0, self.size - length, 4 * KiB)
        self.writes += 1
        if self.rng.random() < 0.1:
            return f"write -z {offset} {length}"
        self.pattern = self.pattern % 254 + 1
        return f"write -P {self.pattern} {offset} {length}"

    def _feed(self) -> None:
        assert self._proc.stdin is not None
        try:
            while not self._halt.is_set():
                self._proc.stdin.write((self._command() + "\n").encode())
                self._proc.stdin.flush()
                time.sleep(self.pause)
        except BrokenPipeError:
            pass

    def stop(self) -> int:
        """Stop writing; wait until qemu-io has done every write; how many it did."""
        self._halt.set()
        self._thread.join(30)
        assert self._proc.stdin is not None and self._proc.stderr is not None
        self._proc.stdin.close()  # qemu-io does what it has read, then ends
        err = self._proc.stderr.read()
        self._proc.wait(60)
        self._proc.stderr.close()
        assert self._proc.returncode == 0, err.decode(errors="replace")
        assert b"failed" not in err, err
        return self.writes


# --- NBD servers -------------------------------------------------------------


class Nbdkit:
    """nbdkit in the foreground on a unix socket: `Nbdkit(dir, "--filter=error", "file", ...)`."""

    def __init__(self, workdir: Path, *args: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "nbdkit.sock"
        self.socket.unlink(missing_ok=True)
        self.log = workdir / "nbdkit.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["nbdkit", "-f", "-U", str(self.socket), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_sockets(self.proc, [self.socket], self.log)
        self.uri = f"nbd+unix:///?socket={self.socket}"

    def stop(self) -> None:
        _stop(self.proc)


@pytest.fixture
def nbdkit(tmp_path: Path) -> Iterator[Callable[..., Nbdkit]]:
    started: list[Nbdkit] = []

    def start(*args: str, name: str = "nbdkit") -> Nbdkit:
        server = Nbdkit(tmp_path / name, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class QemuNbd:
    """A qemu-nbd serving an image on a unix socket (writable unless read_only);
    the same `workdir` gives the same URI again."""

    def __init__(
        self, image: Path, fmt: str, workdir: Path, read_only: bool = False, *extra: str
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "qemu-nbd.sock"
        self.socket.unlink(missing_ok=True)
        self.log = workdir / "qemu-nbd.log"
        args = ["qemu-nbd", "-f", fmt, "-k", str(self.socket), "--persistent", "--shared", "4"]
        if read_only:
            args.append("--read-only")
        args += extra
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*args, str(image)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        _wait_for_sockets(self.proc, [self.socket], self.log)
        self.uri = f"nbd+unix:///?socket={self.socket}"

    def stop(self) -> None:
        _stop(self.proc)

    def crash(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def qemu_nbd(tmp_path: Path) -> Iterator[Callable[..., QemuNbd]]:
    started: list[QemuNbd] = []

    def start(image: Path, fmt: str = "qcow2", read_only: bool = False) -> QemuNbd:
        server = QemuNbd(image, fmt, tmp_path / f"qemu-nbd-{len(started)}", read_only)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- strongroom in the background --------------------------------------------


class Background:
    """A `strongroom` subprocess whose JSON lines on stdout the test reads as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [*strongroom_command(), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buf = b""

    def next_json(self, timeout: float = 30) -> dict[str, Any] | None:
        """The next JSON line on stdout; None at end of output."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no output from strongroom within {timeout} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err.decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def background(cli_env: dict[str, str]) -> Iterator[Callable[..., Background]]:
    """`background("serve", ...)` starts strongroom; anything left is killed at teardown."""
    started: list[Background] = []

    def start(*args: str) -> Background:
        proc = Background(cli_env, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
