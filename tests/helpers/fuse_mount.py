"""Running `strongroom mount` in the background for a test, and stopping it."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import strongroom_command


def fuse_usable() -> str | None:
    """Why FUSE tests cannot run here (None: they can)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (Debian: fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as err:
        return f"mfusepy unusable: {err}"
    return None


needs_fuse = pytest.mark.skipif(fuse_usable() is not None, reason=str(fuse_usable()))


def mounted(path: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


class Mount:
    """`strongroom mount --json PATH` started with `env` (as `command`, e.g.
    `nobody_command()`, if given); `stop` sends a signal, returns the exit code
    and always leaves nothing mounted."""

    def __init__(
        self,
        path: Path,
        env: dict[str, str],
        *args: str,
        timeout: float = 30,
        command: list[str] | None = None,
    ) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [*(command or strongroom_command()), "mount", "--json", *args, str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.ready = self._ready_line(timeout)

    def _ready_line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if readable:
                line = self.proc.stdout.readline()
                if not line:
                    break
                doc: dict[str, Any] = json.loads(line)
                if doc.get("message_type") == "mounted":
                    return doc
        self.stop(signal.SIGKILL)
        err = self.proc.stderr.read().decode() if self.proc.stderr else ""
        raise AssertionError(f"strongroom mount did not come up: {err}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=timeout)
        if mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        return rc
