"""Run a benchmarked command and measure it: wall time, CPU time and peak RSS.

Every timed command goes through ``launcher.py``, a fresh, small Python process, because Linux
carries a parent's memory into a child's ``ru_maxrss`` (see that file). ``run_measured`` waits
for the command; ``Spawned`` starts it and lets the caller do something meanwhile (parallel
backups, a server with a client against it) before ``finish``. Each command's stdout and stderr
go to ``STEM.out`` and ``STEM.err`` (the command line first), so a failure can be shown with
``tail``. Progress goes to stderr through ``log``: a benchmark's report is its stdout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("launcher.py")


def log(msg: str) -> None:
    """Progress goes to stderr; results go to stdout."""
    print(msg, file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log file ('' if it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Measurement:
    """One command's figures, as the launcher reports them."""

    seconds: float
    peak_rss_kib: int
    cpu_seconds: float
    exit_code: int

    @classmethod
    def from_launcher(cls, doc: dict[str, Any]) -> Measurement:
        return cls(doc["seconds"], doc["maxrss_kib"], doc["cpu_seconds"], doc["exit_code"])


def _spec(cmd: list[str], env: dict[str, str], cwd: Path, stem: Path) -> str:
    stem.parent.mkdir(parents=True, exist_ok=True)
    err = stem.with_suffix(".err")
    err.write_text(f"$ {' '.join(cmd)}\n")
    spec = {
        "cmd": cmd,
        "env": env,
        "cwd": str(cwd),
        "stdout": str(stem.with_suffix(".out")),
        "stderr": str(err),
    }
    return json.dumps(spec)


def launcher_cmd() -> list[str]:
    return [sys.executable, "-I", "-S", str(LAUNCHER)]


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path, stem: Path) -> Measurement:
    """Run ``cmd`` in ``cwd`` through the launcher and wait: wall time (perf_counter), peak RSS
    and CPU (wait4). A command that cannot start reports exit code 127 (reason in STEM.err)."""
    proc = subprocess.run(
        launcher_cmd(),
        input=_spec(cmd, env, cwd, stem),
        capture_output=True,
        text=True,
        check=True,
    )
    return Measurement.from_launcher(json.loads(proc.stdout))


class Spawned:
    """A command started through the launcher without waiting for it.

    ``started``/``ended`` are wall-clock instants (``time.time``) around it, for matching
    against other processes' logs; ``finish`` waits and returns the measurement."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, stem: Path) -> None:
        self.stem = stem
        spec = _spec(cmd, env, cwd, stem)
        self.started = time.time()
        self.ended = 0.0
        self.proc = subprocess.Popen(
            launcher_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(spec)
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not flush it again

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the command (the launcher's children), not to the launcher."""
        for pid in children(self.proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def finish(self, timeout: float | None = None) -> Measurement:
        """Wait for the command; after ``timeout`` seconds it is killed (SIGKILL)."""
        assert self.proc.stdout is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            out, _ = self.proc.communicate()
        self.ended = time.time()
        return Measurement.from_launcher(json.loads(out))


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (a scan of /proc: no CONFIG_PROC_CHILDREN here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def version(cmd: list[str]) -> str:
    """The first line a ``--version`` command prints, or why there is none."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    first = lines[0] if lines else ""
    return first if done.returncode == 0 else f"unknown (exit {done.returncode}: {first})"
