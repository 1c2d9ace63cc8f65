"""A private read-only `qemu-nbd` child serving one image on a unix socket.

The socket lives in a fresh temporary directory; the child gets no secrets
(`child_environment`), a SIGTERM when strongroom dies (so no qemu-nbd outlives
a killed backup holding the image's lock), and its stderr goes to a file that
nobody has to drain.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

from strongroom.config import child_environment
from strongroom.errors import SourceError
from strongroom.nbd.uri import format_unix_uri
from strongroom.sources.qemu_img import image_args, need_tool

QEMU_NBD = "qemu-nbd"
_START_TIMEOUT = 20.0


class QemuNbdChild:
    """A private read-only `qemu-nbd` serving one image on a unix socket."""

    def __init__(
        self,
        path: str,
        fmt: str,
        bitmaps: Sequence[str] = (),
        allocation_depth: bool = False,
        writable: bool = False,
        follow: bool = False,
    ) -> None:
        """`follow`: let qemu open the backing file / data file the image names
        (the caller checked them); else it is told `"backing": null`."""
        self.path = path
        tool = need_tool(QEMU_NBD)
        self._dir = tempfile.mkdtemp(prefix="strongroom-nbd-")
        self.socket = os.path.join(self._dir, "nbd.sock")
        args = [tool, "--socket", self.socket, "--persistent"]
        args += ["--shared", "8", "--cache", "writeback"]
        if not writable:
            args.append("--read-only")
        for name in bitmaps:
            args += ["--bitmap", name]
        if allocation_depth:
            args.append("--allocation-depth")
        args += image_args(path, fmt, follow)
        # stderr to a file, not a pipe: nobody reads while it runs, and a full
        # pipe would block qemu-nbd (and the backup with it).
        self._log = os.path.join(self._dir, "qemu-nbd.log")
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=child_environment(),
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        # qemu-nbd creates the socket file before it listens: ready means a
        # connection is accepted.
        while not _accepts(self.socket):
            if self._proc.poll() is not None:
                with open(self._log, "rb") as log:
                    err = log.read().decode(errors="replace")
                self._cleanup()
                lines = err.strip().splitlines()
                raise SourceError(f"{path}: qemu-nbd failed: {lines[-1] if lines else 'no output'}")
            if time.monotonic() > deadline:
                self.close()
                raise SourceError(f"{path}: qemu-nbd did not start")
            time.sleep(0.01)
        self.uri = format_unix_uri(self.socket, "")

    def failure(self) -> str | None:
        """qemu-nbd's last word if it has exited (it may die after listening)."""
        try:
            self._proc.wait(0.5)
        except subprocess.TimeoutExpired:
            return None
        try:
            with open(self._log, "rb") as log:
                lines = log.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"exited with status {self._proc.returncode}"

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when strongroom dies, so no qemu-nbd outlives a
    killed backup holding the image's lock."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _accepts(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
