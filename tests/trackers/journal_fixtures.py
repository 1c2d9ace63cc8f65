"""A tracker subprocess (`strongroom journal run`) and a writer that logs what it
changed, shared by the journal tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from strongroom.errors import SourceError
from strongroom.trackers.fanotify import FsWatch
from strongroom.trackers.journal import MARKER, Journal


def _fanotify_unavailable() -> str | None:
    try:
        with tempfile.TemporaryDirectory() as probe:
            FsWatch(probe).close()
    except (SourceError, OSError) as err:
        return str(err)
    return None


_WHY = _fanotify_unavailable()
BACKENDS = [
    "inotify",
    pytest.param(
        "fanotify", marks=pytest.mark.skipif(_WHY is not None, reason=f"fanotify: {_WHY}")
    ),
]
"""Parametrize a tracker test with this: it runs against both backends."""


class Tracker:
    def __init__(self, tree: Path, state: Path, backend: str = "inotify") -> None:
        self.tree, self.state, self.backend = tree, state, backend
        self.journal = Journal(state / "journal")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        before = self.journal.read().last if self.journal.path.exists() else 0
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "strongroom",
                "journal",
                "run",
                str(self.tree),
                "--state",
                str(self.state),
                "--backend",
                self.backend,
            ],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # ready: its start mark is written
            if self.journal.path.exists() and self.journal.read().last > before:
                return
            assert self.proc.poll() is None, "tracker exited"
            time.sleep(0.02)
        raise AssertionError("tracker did not start")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()
        assert (self.state / "journal" / MARKER).exists()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)

    def sync(self) -> int:
        """Take S and commit it: the journal is in sync and empty afterwards."""
        seq = self.journal.take_sequence()
        self.journal.commit(seq)
        return seq


@contextmanager
def tracker(tree: Path, state: Path, backend: str = "inotify") -> Iterator[Tracker]:
    t = Tracker(tree, state, backend)
    t.start()
    try:
        yield t
    finally:
        t.stop()


def write_some(tree: Path, rng: random.Random, ops: int) -> set[str]:
    """Random creates/modifies/deletes/renames/chmods/mkdirs below `tree`; returns
    every relative path it touched (both names of a rename, a new directory's
    entries), the writer's log."""
    log: set[str] = set()

    def files() -> list[Path]:
        return sorted(p for p in tree.rglob("*") if p.is_file())

    def dirs() -> list[Path]:
        return [tree, *sorted(p for p in tree.rglob("*") if p.is_dir())]

    def rel(p: Path) -> str:
        return str(p.relative_to(tree))

    for _ in range(ops):
        i = rng.randrange(10**9)  # unique across calls
        op = rng.choice(["create", "modify", "delete", "rename", "chmod", "mkdir", "append"])
        existing = files()
        if op in ("modify", "delete", "rename", "chmod", "append") and not existing:
            op = "create"
        if op == "create":
            p = rng.choice(dirs()) / f"new{i}-{rng.randrange(1000)}.bin"
            p.write_bytes(rng.randbytes(rng.randrange(1, 5000)))
            log.add(rel(p))
        elif op == "modify":
            p = rng.choice(existing)
            with open(p, "r+b") as f:
                f.write(rng.randbytes(100))
            log.add(rel(p))
        elif op == "append":
            p = rng.choice(existing)
            with open(p, "ab") as f:
                f.write(rng.randbytes(rng.randrange(1, 70000)))
            log.add(rel(p))
        elif op == "delete":
            p = rng.choice(existing)
            p.unlink()
            log.add(rel(p))
        elif op == "rename":
            p = rng.choice(existing)
            q = rng.choice(dirs()) / f"moved{i}.bin"
            p.rename(q)
            log |= {rel(p), rel(q)}
        elif op == "chmod":
            p = rng.choice(existing)
            p.chmod(0o600 if p.stat().st_mode & 0o044 else 0o644)
            log.add(rel(p))
        else:
            d = rng.choice(dirs()) / f"dir{i}"
            d.mkdir()
            (d / "inner.txt").write_bytes(rng.randbytes(200))
            log |= {rel(d), rel(d / "inner.txt")}
    return log


def make_tree(root: Path, rng: random.Random, files: int = 40) -> None:
    for d in ("", "a", "a/b", "c"):
        (root / d).mkdir(parents=True, exist_ok=True)
    subdirs = ["", "a", "a/b", "c"]
    for i in range(files):
        (root / rng.choice(subdirs) / f"f{i}.bin").write_bytes(
            rng.randbytes(rng.randrange(0, 90000))
        )
