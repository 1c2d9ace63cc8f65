"""Repository locks: many shared holders (backups) or one exclusive holder (prune).

A lock is an immutable object `locks/<random>` holding sealed JSON (who, where,
when, exclusive?). Taking a lock = create ours, then list the others: if any
live lock conflicts, remove ours and fail with RepositoryLocked. A held lock is
refreshed (a new object replaces the old) every REFRESH seconds; a lock is
stale when its process is gone (same host) or it was not refreshed for STALE
seconds. `strongroom unlock` removes stale locks.

A holder that was paused (SIGSTOP, a laptop's sleep) or whose lock was removed
must not carry on as if protected: its lock *lapses* (docs/design.md 4.4), the
refresher never writes it back, and whoever relied on it re-checks before
committing.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from strongroom.errors import IntegrityError, ObjectNotFound, RepositoryLocked, StorageError
from strongroom.model.names import printable
from strongroom.repository.crypto import Sealer
from strongroom.repository.format import LOCKS_PREFIX, lock_name
from strongroom.storage import Backend
from strongroom.storage.base import get_bounded


def _env_seconds(name: str, default: float) -> float:
    """A duration from the environment (tests lower them), else the default."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


# Every process using a repository must agree on these (others judge our lock
# by STALE_SECONDS): change them only for tests.
REFRESH_SECONDS = _env_seconds("STRONGROOM_LOCK_REFRESH_SECONDS", 5 * 60)
STALE_SECONDS = max(_env_seconds("STRONGROOM_LOCK_STALE_SECONDS", 30 * 60), 2 * REFRESH_SECONDS)
_JOIN_SECONDS = 5  # reacquire waits this long for the old refresher (then ignores it)
_AD = b"lock"
MAX_LOCK_SIZE = 64 << 10  # a lock is a JSON record of about 200 bytes; read no more


@dataclass(frozen=True)
class LockInfo:
    name: str
    exclusive: bool
    host: str
    pid: int
    user: str
    time: float

    def is_stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if now - self.time > STALE_SECONDS:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        who = printable(f"{self.user}@{self.host}")  # written by any key holder: one line
        return f"{kind} lock by {who} pid {self.pid} since {when}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host exists (a lock or lease holder)."""
    if pid <= 0:
        return False  # 0 and -1 would ask about process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lapse_age() -> float:
    """How long after its last refresh a holder stops trusting its own lock: one
    refresh interval before anyone else may judge it stale (margin for clock skew
    and a slow create)."""
    return STALE_SECONDS - REFRESH_SECONDS


def list_locks(backend: Backend, sealer: Sealer) -> list[LockInfo]:
    locks = []
    for obj in backend.list(LOCKS_PREFIX):
        try:
            sealed = get_bounded(backend, obj.name, MAX_LOCK_SIZE, obj.size)
            info = _decode_lock(obj.name, sealer.open(sealed, _AD, obj.name))
        except (ObjectNotFound, IntegrityError, ValueError, KeyError, TypeError, RecursionError):
            continue  # removed meanwhile, or not ours to read
        locks.append(info)
    return locks


_MAX_PID = 1 << 22  # Linux's pid_max limit
_MAX_TIME = 253402300799.0  # 9999-12-31: what localtime() can show


def _decode_lock(name: str, plain: bytes) -> LockInfo:
    """A lock record; ValueError/TypeError/KeyError if malformed. Any key holder
    writes locks, so the pid must fit `kill()`, the time `localtime()`."""
    doc = json.loads(plain)
    pid, when = doc["pid"], doc["time"]
    if type(pid) is not int or not 0 <= pid <= _MAX_PID:
        raise ValueError("lock pid out of range")
    if not isinstance(when, int | float) or not math.isfinite(when) or not 0 <= when <= _MAX_TIME:
        raise ValueError("lock time out of range")
    return LockInfo(name, bool(doc["exclusive"]), str(doc["host"]), pid, str(doc["user"]), when)


class Lock:
    """A held lock; refreshes itself on a daemon thread until released.

    A refresh never resurrects a lock: it replaces our lock object only if that
    object still exists and was written less than `lapse_age()` ago, and checks
    both again once the new object exists. Otherwise the lock has *lapsed* (it was
    removed, or we were paused long enough that others may have judged it stale
    and a prune may have run): the refresher stops, and the lock stays lapsed
    until `reacquire` takes a new one through the ordinary conflict check.
    """

    def __init__(self, backend: Backend, sealer: Sealer, exclusive: bool) -> None:
        self.backend = backend
        self.sealer = sealer
        self.exclusive = exclusive
        self.name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self._last_refresh = time.time()
        self._lapsed: str | None = None
        # Which acquisition a refresher serves: a refresher of an earlier one
        # (stuck past reacquire's join) must not touch the lock taken since.
        self._generation = 0

    def _write(self) -> tuple[str, float]:
        """Create a new lock object; return its name and the time written into it
        (others judge staleness by that time, so we do too)."""
        written = time.time()
        doc = {
            "exclusive": self.exclusive,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "user": getpass.getuser(),
            "time": written,
        }
        name = lock_name(secrets.token_hex(32))
        self.backend.create(name, self.sealer.seal(json.dumps(doc).encode(), _AD))
        return name, written

    def acquire(self) -> Lock:
        name, written = self._write()
        for other in list_locks(self.backend, self.sealer):
            if other.name == name or other.is_stale():
                continue
            if self.exclusive or other.exclusive:
                self._remove(name)
                raise RepositoryLocked(f"repository is locked: {other.describe()}{_live_hint()}")
        stop = threading.Event()
        with self._mutex:
            self._generation += 1
            generation = self._generation
            self.name, self._last_refresh, self._lapsed = name, written, None
            self._stop = stop
        self._thread = threading.Thread(
            target=self._refresh_loop, args=(generation, stop), daemon=True, name="lock"
        )
        self._thread.start()
        return self

    def _refresh_loop(self, generation: int, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_SECONDS):
            if not self._refresh_once(generation):
                return

    def _refresh_once(self, generation: int | None = None) -> bool:
        """Replace our lock object with a fresh one; False once the lock has lapsed,
        or once it was taken again since `generation` (the current one if None)."""
        with self._mutex:
            if generation is None:
                generation = self._generation
            if generation != self._generation:
                return False
            old, last, lapsed = self.name, self._last_refresh, self._lapsed
        if lapsed is not None or not old:
            return False
        try:
            reason = self._lapse_reason(old, last)
            if reason is not None:
                self._lapse(reason, generation)
                return False
            new, written = self._write()
        except StorageError:
            return True  # try again; the age check lapses the lock if this goes on
        # The checks again, now that the new object exists: a pause between the
        # first check and the create (SIGSTOP right there) must not bridge a gap
        # in which our lock was missing or stale.
        try:
            reason = self._lapse_reason(old, last)
        except StorageError:
            reason = "our lock could not be verified after a refresh"
        if reason is not None:
            self._remove(new)
            self._lapse(reason, generation)
            return False
        with self._mutex:
            current = generation == self._generation
            if current:
                self.name, self._last_refresh = new, written
        if not current:  # taken again meanwhile: `new` is no lock of ours
            self._remove(new)
            return False
        self._remove(old)
        return True

    def _lapse_reason(self, name: str, last: float) -> str | None:
        """Why the lock object `name`, last written at `last`, no longer protects us."""
        age = time.time() - last
        if age >= lapse_age():
            return f"our lock was not refreshed for {age:.0f} seconds (the process was paused?)"
        if not self.backend.exists(name):
            return "our lock was removed by someone else ('strongroom unlock --remove-all'?)"
        return None

    def _lapse(self, reason: str, generation: int) -> None:
        """Mark the lock of `generation` lapsed; a later acquisition is not."""
        with self._mutex:
            if generation != self._generation:
                return
            if self._lapsed is None:
                self._lapsed = reason
            stop = self._stop
        stop.set()

    def lapsed(self) -> str | None:
        """None while this lock protects us, else why it no longer does.

        Checked now (the object exists, and its last refresh is younger than
        `lapse_age()`), so a paused process sees its lapse the moment it resumes,
        even before the refresher wakes. Once lapsed, always lapsed (until
        `reacquire`)."""
        with self._mutex:
            name, last, reason = self.name, self._last_refresh, self._lapsed
            generation = self._generation
        if reason is None:
            try:
                reason = self._lapse_reason(name, last)
            except StorageError as err:
                reason = f"our lock could not be verified ({err})"
            if reason is not None:
                self._lapse(reason, generation)
        return reason

    def verify(self, stopping: str = "not committing") -> None:
        """Raise RepositoryLocked if this lock may no longer protect us; the
        message ends with `stopping` (what the caller refuses to do)."""
        reason = self.lapsed()
        if reason is not None:
            raise RepositoryLocked(f"{reason}; {stopping}")

    def reacquire(self) -> None:
        """After a lapse: drop what is left of the old lock and take a new one
        through the ordinary conflict check (RepositoryLocked if someone holds a
        conflicting lock now). The caller must then re-check whatever it relied
        on while the old lock was valid: the gap was unprotected."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=_JOIN_SECONDS)  # stuck (slow storage)? it does nothing
        with self._mutex:
            old, self.name = self.name, ""
        if old:
            self._remove(old)
        self.acquire()

    def _remove(self, name: str) -> None:
        try:
            self.backend.delete(name)
        except (ObjectNotFound, StorageError):
            pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._mutex:
            if self.name:
                self._remove(self.name)
                self.name = ""

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _live_hint() -> str:
    minutes = STALE_SECONDS / 60
    return (
        f" (wait for it to finish; if its process is gone, the lock turns stale "
        f"after {minutes:g} minutes, or at once on the same host, and 'strongroom unlock' "
        "removes it)"
    )


def remove_locks(backend: Backend, sealer: Sealer, *, all_locks: bool) -> list[LockInfo]:
    """Remove stale locks (or every lock with `all_locks`); return what was removed."""
    removed = []
    for info in list_locks(backend, sealer):
        if all_locks or info.is_stale():
            try:
                backend.delete(info.name)
            except ObjectNotFound:
                continue
            removed.append(info)
    return removed
