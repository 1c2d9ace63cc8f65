"""CPU and I/O priority of a job: how a backup stays out of the way of running VMs.

Three levels (`--priority`, the `priority` setting, STRONGROOM_PRIORITY):

- `idle`: CPU policy SCHED_IDLE (the scheduler runs the job only on CPU time
  nothing else wants) and I/O class idle (the kernel's I/O scheduler serves
  the job only when no other process has I/O queued; honoured by BFQ and
  mq-deadline, not by the `none` scheduler that most virtio and NVMe disks
  use: there only the CPU part acts). The default of VM backups and protect.
- `low`: nice 10 and I/O class best-effort, level 7 (the lowest): the job
  still gets a share under contention, a smaller one.
- `normal`: nothing changes (the default of file and image backups).

Contract of `apply_priority`: it sets every thread of the calling process
(`scope="process"`; /proc/self/task), or only the calling thread
(`scope="thread"`: the agent runs each job on a thread of its own); threads
and processes started afterwards inherit it from the thread that starts them
(Linux keeps policy, nice and I/O priority per thread and copies them at
clone). It never raises for what the system refuses (no permission, no such
system call, not Linux): it returns one-line warnings and the job runs as it
was. It cannot be undone without privileges (an unprivileged thread may lower
its priority, not raise it again): set it once, early, where the job's
threads are born.

ioprio_set/ioprio_get have no wrapper in Python's standard library: they are
called through libc's `syscall` with the architecture's numbers.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass
from enum import StrEnum


class Priority(StrEnum):
    IDLE = "idle"
    LOW = "low"
    NORMAL = "normal"


PRIORITY_NAMES = tuple(p.value for p in Priority)
LOW_NICE = 10

# ioprio classes (linux/ioprio.h): value = class << 13 | level.
IOPRIO_CLASS_NONE = 0
IOPRIO_CLASS_RT = 1
IOPRIO_CLASS_BE = 2
IOPRIO_CLASS_IDLE = 3
_CLASS_SHIFT = 13
_WHO_PROCESS = 1  # IOPRIO_WHO_PROCESS: one thread (a tid), 0 = the caller
_SYSCALLS = {  # machine -> (ioprio_set, ioprio_get)
    "x86_64": (251, 252),
    "amd64": (251, 252),
    "aarch64": (30, 31),
    "arm64": (30, 31),
    "i386": (289, 290),
    "i686": (289, 290),
    "ppc64le": (273, 274),
    "s390x": (282, 283),
    "riscv64": (30, 31),
}


def parse_priority(text: str) -> Priority:
    """The level named by `text` (case-insensitive); ValueError naming the choices."""
    try:
        return Priority(text.strip().lower())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a priority (choose {', '.join(PRIORITY_NAMES)})"
        ) from None


@dataclass(frozen=True)
class ThreadPriority:
    """What one thread runs at: scheduling policy, nice, I/O class and level
    (class None: the I/O priority could not be read)."""

    policy: int
    nice: int
    io_class: int | None
    io_level: int | None

    @property
    def idle(self) -> bool:
        return self.policy == os.SCHED_IDLE and self.io_class == IOPRIO_CLASS_IDLE


def _syscalls() -> tuple[int, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return _SYSCALLS.get(os.uname().machine.lower())


def _syscall(*args: int) -> tuple[int, int]:
    """libc's syscall(args): (result, errno). ctypes loads here, not at import
    (config.py imports this module on every command's path)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.syscall(*args))
    return result, ctypes.get_errno()


def ioprio_get(tid: int = 0) -> tuple[int, int] | None:
    """(class, level) of thread `tid` (0: the caller); None where it cannot be read."""
    numbers = _syscalls()
    if numbers is None:
        return None
    value, _ = _syscall(numbers[1], _WHO_PROCESS, tid)
    if value < 0:
        return None
    return value >> _CLASS_SHIFT, value & ((1 << _CLASS_SHIFT) - 1)


def _ioprio_set(tid: int, io_class: int, level: int) -> str | None:
    numbers = _syscalls()
    if numbers is None:
        return f"I/O priority: not supported on {sys.platform}/{os.uname().machine}"
    result, err = _syscall(numbers[0], _WHO_PROCESS, tid, io_class << _CLASS_SHIFT | level)
    if result < 0:
        return f"I/O priority not set: {os.strerror(err)}"
    return None


def thread_priority(tid: int = 0) -> ThreadPriority:
    """What thread `tid` (0: the caller; a pid is its main thread) runs at."""
    io = ioprio_get(tid)
    return ThreadPriority(
        os.sched_getscheduler(tid),
        os.getpriority(os.PRIO_PROCESS, tid),
        io[0] if io else None,
        io[1] if io else None,
    )


def _threads() -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        return [0]


def _set_one(tid: int, level: Priority) -> list[str]:
    problems: list[str] = []
    try:
        if level is Priority.IDLE:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif os.getpriority(os.PRIO_PROCESS, tid) < LOW_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, LOW_NICE)
    except ProcessLookupError:
        return []  # the thread ended meanwhile
    except (OSError, AttributeError) as err:
        problems.append(f"CPU priority not set: {getattr(err, 'strerror', None) or err}")
    if level is Priority.IDLE:
        io = _ioprio_set(tid, IOPRIO_CLASS_IDLE, 0)
    else:
        io = _ioprio_set(tid, IOPRIO_CLASS_BE, 7)
    if io is not None and not io.endswith(os.strerror(errno.ESRCH)):
        problems.append(io)
    return problems


def apply_priority(level: Priority, scope: str = "process") -> list[str]:
    """Run the calling process (every thread) or thread at `level`; the module
    docstring has the contract. Returns one-line warnings (empty: all set)."""
    if level is Priority.NORMAL:
        return []
    if not hasattr(os, "sched_setscheduler"):
        return [f"priority {level}: not supported on {sys.platform}"]
    tids = _threads() if scope == "process" else [0]
    problems: list[str] = []
    for tid in tids:
        for problem in _set_one(tid, level):
            if problem not in problems:
                problems.append(problem)
    return [f"priority {level}: {p} (the job runs at its current priority)" for p in problems]
