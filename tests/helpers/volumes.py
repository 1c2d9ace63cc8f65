"""Protected volumes in tests: who may run them, a steady writer with a log, the
check that a point holds exactly the acknowledged writes, and a cleanup that
removes every mount, loop device and daemon a test left, even on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strongroom.sources.volume import daemon_alive, fuse_mounted, loop_backing, mount_of
from strongroom.sources.volume_state import VolumeState, iter_states

MiB = 1 << 20


def volumes_possible() -> str | None:
    """Why protected volumes cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "protected volumes need root (loop devices, mount, fsfreeze)"
    for tool in ("qemu-storage-daemon", "qemu-img", "losetup", "fsfreeze", "mkfs.ext4", "e2fsck"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


needs_volumes = pytest.mark.skipif(volumes_possible() is not None, reason=str(volumes_possible()))


def payload(seq: int, size: int = 16 * 1024) -> bytes:
    seed = hashlib.sha256(seq.to_bytes(8, "big")).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class Write:
    seq: int
    started: float
    acked: float | None = None  # fsync returned


@dataclass
class Writer:
    """Creates w000000, w000001, ... in `folder`, each fsync'd, logging when
    each started and when it was acknowledged. Stops at the first error (a
    dead device) or when told."""

    folder: Path
    pause: float = 0.005
    log: list[Write] = field(default_factory=list)
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            entry = Write(seq, time.time())
            self.log.append(entry)
            try:
                fd = os.open(self.folder / f"w{seq:06d}", os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.write(fd, payload(seq))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as err:
                self.error = str(err)
                return
            entry.acked = time.time()
            seq += 1
            time.sleep(self.pause)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the writer is stuck"


def run(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(a) for a in args], capture_output=True, timeout=120, check=False)


@contextlib.contextmanager
def mounted_ro(raw: Path, where: Path) -> Iterator[Path]:
    """Loop-mount a restored ext4 image read-only (no journal replay)."""
    where.mkdir(exist_ok=True)
    proc = run("mount", "-t", "ext4", "-o", "ro,loop,noload", raw, where)
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        yield where
    finally:
        run("umount", where)


def check_writes(
    root: Path, log: list[Write], acked_before: float, started_before: float
) -> set[int]:
    """The tree holds every write acknowledged before `acked_before` (whole),
    and no write started at or after `started_before`. Returns the seqs present."""
    present = {int(p.name[1:]) for p in root.iterdir() if p.name.startswith("w")}
    by_seq = {w.seq: w for w in log}
    for w in log:
        if w.acked is not None and w.acked < acked_before:
            assert w.seq in present, f"write {w.seq} acknowledged before the freeze is missing"
            assert (root / f"w{w.seq:06d}").read_bytes() == payload(w.seq), w.seq
    for seq in present:
        assert seq in by_seq, f"file w{seq:06d} was never written"
        assert by_seq[seq].started < started_before, f"write {seq} started after the thaw"
    return present


def clean_everything(state_dir: Path, mounts: list[Path]) -> None:
    """Remove whatever the volumes recorded under `state_dir` left: mounts,
    loop devices, daemons, dead FUSE exports. Safe to call after a clean detach."""
    for mount in mounts:
        while mount_of(str(mount)) is not None:
            if run("umount", mount).returncode != 0:
                run("umount", "-l", mount)
    for found in iter_states():
        if not isinstance(found, VolumeState):
            continue
        state = found
        if state.mount:
            while mount_of(state.mount) is not None:
                if run("umount", state.mount).returncode != 0:
                    run("umount", "-l", state.mount)
                    break
        if state.loop and loop_backing(state.loop) == state.export:
            run("losetup", "-d", state.loop)
        if daemon_alive(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGKILL)
        if state.run_dir and fuse_mounted(state.export):
            run("umount", "-l", state.export)
        if state.run_dir and os.path.basename(state.run_dir).startswith("strongroom-vol-"):
            shutil.rmtree(state.run_dir, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)


def assert_detached(state: VolumeState) -> None:
    """Nothing of the volume is left: no mount, loop device, daemon, export, record."""
    assert mount_of(state.mount) is None, f"{state.mount} is still mounted"
    assert state.loop == "" or loop_backing(state.loop) != state.export, "loop device left"
    assert not daemon_alive(state), "daemon left running"
    assert not fuse_mounted(state.export), "FUSE export left mounted"
    assert not os.path.exists(state.run_dir), "run folder left"
    assert not any(isinstance(s, VolumeState) and s.image == state.image for s in iter_states())
