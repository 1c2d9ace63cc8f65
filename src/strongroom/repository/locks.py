"""Repository locks: many shared holders (backups) or one exclusive holder (prune).

A lock is an immutable object `locks/<random>` holding sealed JSON (who, where,
when, exclusive?). Taking a lock = create ours, then list the others: if any
live lock conflicts, remove ours and fail with RepositoryLocked. A held lock is
refreshed (a new object replaces the old) every REFRESH seconds; a lock is
stale when its process is gone (same host) or it was not refreshed for STALE
seconds. `strongroom unlock` removes stale locks.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from strongroom.errors import IntegrityError, ObjectNotFound, RepositoryLocked, StorageError
from strongroom.repository.crypto import Sealer
from strongroom.repository.format import LOCKS_PREFIX, lock_name
from strongroom.storage import Backend

REFRESH_SECONDS = 5 * 60
STALE_SECONDS = 30 * 60
_AD = b"lock"


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
        return f"{kind} lock by {self.user}@{self.host} pid {self.pid} since {when}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host exists (a lock or lease holder)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_locks(backend: Backend, sealer: Sealer) -> list[LockInfo]:
    locks = []
    for obj in backend.list(LOCKS_PREFIX):
        try:
            doc = json.loads(sealer.open(backend.get(obj.name), _AD, obj.name))
        except (ObjectNotFound, IntegrityError, ValueError):
            continue  # removed meanwhile, or not ours to read
        locks.append(
            LockInfo(
                obj.name,
                bool(doc["exclusive"]),
                str(doc["host"]),
                int(doc["pid"]),
                str(doc["user"]),
                float(doc["time"]),
            )
        )
    return locks


class Lock:
    """A held lock; refreshes itself on a daemon thread until released."""

    def __init__(self, backend: Backend, sealer: Sealer, exclusive: bool) -> None:
        self.backend = backend
        self.sealer = sealer
        self.exclusive = exclusive
        self.name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self._last_refresh = time.time()

    def _write(self) -> str:
        doc = {
            "exclusive": self.exclusive,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "user": getpass.getuser(),
            "time": time.time(),
        }
        name = lock_name(secrets.token_hex(32))
        self.backend.create(name, self.sealer.seal(json.dumps(doc).encode(), _AD))
        return name

    def acquire(self) -> Lock:
        self.name = self._write()
        for other in list_locks(self.backend, self.sealer):
            if other.name == self.name or other.is_stale():
                continue
            if self.exclusive or other.exclusive:
                self._remove(self.name)
                hint = " (it may be stale: 'strongroom unlock' removes stale locks)"
                raise RepositoryLocked(f"repository is locked: {other.describe()}{hint}")
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="lock")
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                new = self._write()
            except StorageError:
                continue  # `verify` fails once the lock could have gone stale
            with self._mutex:
                old, self.name = self.name, new
                self._last_refresh = time.time()
            self._remove(old)

    def verify(self) -> None:
        """Raise RepositoryLocked if this lock may no longer protect us: it was
        removed (`unlock --remove-all`) or not refreshed for long enough that
        others may treat it as stale. Call before committing work (a point)."""
        with self._mutex:
            name, last = self.name, self._last_refresh
        if time.time() - last > STALE_SECONDS - REFRESH_SECONDS:
            raise RepositoryLocked("our lock could not be refreshed in time; not committing")
        if not self.backend.exists(name):
            raise RepositoryLocked("our lock was removed by someone else; not committing")

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
