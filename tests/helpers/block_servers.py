"""Processes that block image tests run: a qemu-storage-daemon with QMP, a
background writer, nbdkit, qemu-nbd, and strongroom itself in the background.
Every one is stopped by the fixture that started it (tests/images/conftest.py).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from strongroom.sources.qmp import QmpClient
from tests.conftest import CliRunner
from tests.helpers.cli import strongroom_command
from tests.helpers.images import START_TIMEOUT, KiB, backup, qemu_io, run


def accepts(path: Path) -> bool:
    """True once a unix socket accepts connections (its file appears at bind(),
    a moment before listen(): existing is not enough)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def wait_for_sockets(proc: subprocess.Popen[bytes], paths: list[Path], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(paths)
    while waiting:
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}): {log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{waiting} not listening after {START_TIMEOUT} s")
        waiting = [p for p in waiting if not accepts(p)]
        if waiting:
            time.sleep(0.01)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
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
        wait_for_sockets(self.proc, [self.nbd_socket, self.qmp, self.control_socket], self.log)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

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
        wait_for_sockets(self.proc, [self.socket], self.log)
        self.uri = f"nbd+unix:///?socket={self.socket}"

    def stop(self) -> None:
        stop_process(self.proc)


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
        wait_for_sockets(self.proc, [self.socket], self.log)
        self.uri = f"nbd+unix:///?socket={self.socket}"

    def stop(self) -> None:
        stop_process(self.proc)

    def crash(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


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
