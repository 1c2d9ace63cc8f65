"""A protected volume's pieces: the daemon, the loop device, the mount, the freeze.

A protected volume is an image (qcow2 or raw) served by a qemu-storage-daemon
through a FUSE export (a regular file), with a loop device on that file and a
file system mounted from the loop device. Every write of the file system goes
through QEMU's block layer, where a dirty bitmap records the changed clusters:
a write filter without a kernel module.

This module starts and stops each piece and tells whether it is still there;
it never decides what to do about a missing one (services/volumes.py does).
Every program runs with `config.child_environment()` and a timeout, so a hung
tool ends in an error, never in a hung strongroom.

The daemon runs with `--daemonize`: its first process returns once the export,
the NBD server (for the cycle's frozen views) and QMP are ready, and the
daemon itself outlives the command that attached it. It is recognised by its
pid *and* its command line naming the volume's QMP socket (a reused pid or a
zombie is not the daemon).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

from strongroom.config import child_environment
from strongroom.errors import SourceError
from strongroom.sources.qemu_img import need_tool
from strongroom.sources.qmp import QmpClient
from strongroom.sources.volume_state import NODE, VolumeState

DAEMON = "qemu-storage-daemon"
TOOL_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0


def run(args: list[str], what: str, timeout: float = TOOL_TIMEOUT) -> str:
    """Run a tool; its stdout, or SourceError with `what` and the tool's last line."""
    try:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=child_environment({"LC_ALL": "C"}),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise SourceError(f"{what}: {args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SourceError(
            f"{what}: {os.path.basename(args[0])} did not finish in {timeout:.0f} s"
        ) from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"{what}: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return proc.stdout.decode(errors="replace")


# --- the daemon ---------------------------------------------------------------


def daemon_args(state: VolumeState) -> list[str]:
    image = state.image.replace(",", ",,")  # QEMU's option syntax escapes commas
    return [
        need_tool(DAEMON),
        "--blockdev",
        f"driver=file,filename={image},node-name=file0,discard=unmap",
        "--blockdev",
        f"driver={state.format},file=file0,node-name={NODE},discard=unmap",
        "--export",
        f"type=fuse,id=fuse0,node-name={NODE},mountpoint={state.export},writable=on",
        "--nbd-server",
        f"addr.type=unix,addr.path={state.nbd}",
        "--chardev",
        f"socket,path={state.qmp},server=on,wait=off,id=qmp0",
        "--monitor",
        "chardev=qmp0",
        "--pidfile",
        state.pid_file,
        "--daemonize",
    ]


def start_daemon(state: VolumeState) -> int:
    """Start the volume's daemon (the export file must exist); its pid once it serves."""
    with open(state.export, "ab"):
        pass  # the FUSE export mounts over a regular file
    with open(state.log_file, "wb") as log:
        try:
            proc = subprocess.run(
                daemon_args(state),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_environment(),
                timeout=TOOL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceError(f"{state.image}: {DAEMON} did not start") from None
    if proc.returncode != 0:
        raise SourceError(f"{state.image}: {DAEMON} failed: {_last_line(state.log_file)}")
    try:
        with open(state.pid_file) as f:
            pid = int(f.read(32).strip())
    except (OSError, ValueError):
        raise SourceError(f"{state.image}: {DAEMON} wrote no pid file") from None
    return pid


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read(65536).decode(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "no output"


def daemon_alive(state: VolumeState) -> bool:
    """The recorded pid is a running qemu-storage-daemon of this volume."""
    if state.pid <= 0 or not state.run_dir:
        return False
    try:
        with open(f"/proc/{state.pid}/cmdline", "rb") as f:
            cmdline = f.read(1 << 16)
    except OSError:
        return False
    # A zombie's command line is empty; another process's names no such socket.
    return DAEMON.encode() in cmdline and state.qmp.encode() in cmdline


def stop_daemon(state: VolumeState) -> str:
    """Stop the daemon: QMP `quit` (it closes the image cleanly, writing its
    persistent bitmaps), else SIGTERM, else SIGKILL. Returns what was done."""
    if not daemon_alive(state):
        return "not running"
    how = "quit"
    try:
        with QmpClient(state.qmp, timeout=10) as qmp:
            qmp.execute("quit")
    except SourceError:
        how = "terminated"
        _signal(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while daemon_alive(state):
        if time.monotonic() > deadline:
            _signal(state.pid, signal.SIGKILL)
            how = "killed"
            deadline = time.monotonic() + _STOP_TIMEOUT
        time.sleep(0.02)
    return how


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# --- mounts --------------------------------------------------------------------


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_of(path: str) -> tuple[str, str] | None:
    """(file system type, source) of the mount at exactly `path`, the topmost one."""
    found = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts, rest = left.split(), right.split()
                if len(parts) >= 5 and len(rest) >= 2 and _unescape(parts[4]) == path:
                    found = (rest[0], _unescape(rest[1]))
    except OSError:
        return None
    return found


def mount_fs(loop: str, mount: str, fs: str) -> None:
    run(["mount", "-t", fs, loop, mount], f"cannot mount {loop} on {mount}")


def unmount(path: str, lazy: bool = False) -> None:
    """Unmount `path`; a busy file system is refused (SourceError), never detached
    lazily unless `lazy` (only for a dead FUSE export nobody can use)."""
    args = ["umount", path] if not lazy else ["umount", "-l", path]
    run(args, f"cannot unmount {path}")


def fuse_mounted(path: str) -> bool:
    found = mount_of(path)
    return found is not None and found[0].startswith("fuse")


# --- loop devices --------------------------------------------------------------


def attach_loop(path: str) -> str:
    """A new loop device on `path`; its name (/dev/loopN)."""
    out = run(["losetup", "--find", "--show", path], f"cannot set up a loop device on {path}")
    loop = out.strip()
    if not loop.startswith("/dev/loop"):
        raise SourceError(f"losetup gave {loop[:40]!r} for {path}")
    return loop


def loop_backing(loop: str) -> str | None:
    """The file behind `loop`, None when the device is not set up."""
    name = os.path.basename(loop)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read(8192).rstrip("\n").removesuffix(" (deleted)")
    except OSError:
        return None


def detach_loop(loop: str) -> None:
    run(["losetup", "-d", loop], f"cannot detach {loop}")


def make_fs(loop: str, fs: str) -> None:
    tool = f"mkfs.{fs}"
    args = [tool, "-q", loop] if fs != "xfs" else [tool, "-q", "-f", loop]
    run(args, f"cannot make a {fs} file system on {loop}", timeout=300)


# --- freezing ------------------------------------------------------------------


FIFREEZE = 0xC0045877  # _IOWR('X', 119, int): what fsfreeze(8) calls
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


@contextlib.contextmanager
def fsfreeze(mount: str, timeout: float = 10.0) -> Iterator[None]:
    """Hold the file system's writers for the body (the FIFREEZE ioctl that
    `fsfreeze -f` makes, without starting a process: tens of milliseconds
    less held); thawed in every case, even when the body fails. The plain
    quiesce a volume cycle uses when no engine is plugged in; `timeout` bounds
    the freeze (the kernel flushes dirty data first): past it the file system
    is thawed and SourceError raised."""
    try:
        fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise SourceError(f"cannot freeze {mount}: {err.strerror}") from None
    try:
        _freeze(fd, mount, timeout)
        try:
            yield
        finally:
            try:
                fcntl.ioctl(fd, FITHAW, 0)
            except OSError as err:
                raise SourceError(f"cannot thaw {mount}: {err.strerror}") from None
    finally:
        os.close(fd)


def _freeze(fd: int, mount: str, timeout: float) -> None:
    """FIFREEZE in a thread, waited for `timeout`: a freeze that does not end in
    time (a device that stopped answering) is thawed as soon as it ends."""
    done = threading.Event()
    failure: list[OSError] = []

    def freeze() -> None:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as err:
            failure.append(err)
        done.set()

    worker = threading.Thread(target=freeze, name="fsfreeze", daemon=True)
    worker.start()
    if not done.wait(timeout):
        late = os.dup(fd)

        def thaw_when_frozen() -> None:
            worker.join()
            with contextlib.suppress(OSError):
                if not failure:
                    fcntl.ioctl(late, FITHAW, 0)
            os.close(late)

        threading.Thread(target=thaw_when_frozen, name="fsthaw", daemon=True).start()
        raise SourceError(f"cannot freeze {mount}: not frozen within {timeout:.0f} s")
    if failure:
        raise SourceError(f"cannot freeze {mount}: {failure[0].strerror}")
