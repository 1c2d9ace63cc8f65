"""Cluster-wide leases: one holder at a time for a named thing (a VM's backup).

Every host that backs a VM up writes to the same repository, so the lease
lives there, built only on what every backend guarantees: an exclusive
`create`. A lease is a sequence of immutable generations
`leases/<id>/<generation>`, each a sealed JSON record (holder, host, pid,
expiry, state). The newest generation is the truth. Every change, taking,
renewing, handing back, is the creation of the next generation, and only one
creator can win it, so two hosts can never both believe they hold the lease:
the loser of a race sees ObjectExists and re-reads. A holder that dies stops
renewing; once its record's expiry passes (or at once, on its own host, when
its pid is gone), the next taker creates the following generation.

Expiry compares wall clocks across hosts; the TTL (60 s by default) is meant
to dwarf cluster clock skew. A holder that cannot renew in time learns it
from `verify()` before committing work, so it never commits under a lease
that may have passed on.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from strongroom.errors import (
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    RepositoryLocked,
    StorageError,
)
from strongroom.hostid import host_id
from strongroom.model.names import printable
from strongroom.repository.crypto import Sealer
from strongroom.repository.locks import pid_alive
from strongroom.storage import Backend
from strongroom.storage.base import get_bounded

LEASES_PREFIX = "leases/"
DEFAULT_TTL = 60.0
_AD = b"lease"
MAX_LEASE_SIZE = 1 << 20  # a lease is a JSON record with a holder's few notes
_KEEP_GENERATIONS = 4


class LeaseBusy(RepositoryLocked):
    """Someone else holds the lease."""


class LeaseLost(RepositoryLocked):
    """Our lease passed on (not renewed in time, or taken over)."""


@dataclass(frozen=True)
class LeaseRecord:
    generation: int
    holder: str  # a random id per acquisition
    host: str
    pid: int
    expires: float  # wall-clock seconds; 0 when handed back
    taken: float
    what: str  # what the lease is for, for people reading `status`
    data: dict[str, object] = field(default_factory=dict)  # the holder's notes
    host_id: str = ""  # the holder's pid namespace (hostid.py)

    @property
    def free(self) -> bool:
        return self.expires == 0

    def expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.free or now >= self.expires:
            return True
        # A pid is judged only where it means the same process (hostid.py).
        return self.host_id == host_id() and not pid_alive(self.pid)

    def describe(self) -> str:
        left = max(0.0, self.expires - time.time())
        since = time.strftime("%H:%M:%S", time.localtime(self.taken))
        host = printable(self.host)  # written by any key holder: one line
        return f"{host} (pid {self.pid}) since {since}, lease {left:.0f} s left"


_MAX_PID = 1 << 22  # Linux's pid_max limit
_MAX_TIME = 253402300799.0  # 9999-12-31: what localtime() can show


def _decode(generation: int, plain: bytes) -> LeaseRecord:
    """A lease record; ValueError/TypeError/KeyError if malformed. Any key holder
    writes leases, so the pid must fit `kill()`, the times `localtime()`."""
    doc = json.loads(plain)
    pid, expires, taken = doc["pid"], doc["expires"], doc["taken"]
    if type(pid) is not int or not 0 <= pid <= _MAX_PID:
        raise ValueError("lease pid out of range")
    for when in (expires, taken):
        if not isinstance(when, int | float) or not math.isfinite(when):
            raise ValueError("lease time is not a number")
        if not 0 <= when <= _MAX_TIME:
            raise ValueError("lease time out of range")
    data = doc.get("data") or {}
    if not isinstance(data, dict):
        raise TypeError("lease data is not a map")
    return LeaseRecord(
        generation=generation,
        holder=str(doc["holder"]),
        host=str(doc["host"]),
        pid=pid,
        expires=float(expires),
        taken=float(taken),
        what=str(doc.get("what", "")),
        data=data,
        host_id=str(doc.get("host_id", "")),
    )


def _name(lease_id: str, generation: int) -> str:
    return f"{LEASES_PREFIX}{lease_id}/{generation:016d}"


class LeaseStore:
    """Reading and writing the generations of leases in one repository."""

    def __init__(self, backend: Backend, sealer: Sealer) -> None:
        self.backend = backend
        self.sealer = sealer

    def current(self, lease_id: str) -> LeaseRecord | None:
        """The newest generation of `lease_id`, if any."""
        prefix = f"{LEASES_PREFIX}{lease_id}/"
        generations = sorted(
            (
                int(o.name[len(prefix) :])
                for o in self.backend.list(prefix)
                if o.name[len(prefix) :].isdigit()
            ),
            reverse=True,
        )
        for generation in generations:
            name = _name(lease_id, generation)
            try:
                sealed = get_bounded(self.backend, name, MAX_LEASE_SIZE)
                return _decode(generation, self.sealer.open(sealed, _AD, name))
            except ObjectNotFound:
                continue  # cleaned up meanwhile; an older one is not the truth either
            except (IntegrityError, ValueError, KeyError, TypeError, RecursionError):
                # Damaged, or sealed with another key: it holds nothing, and the
                # next generation is what a taker creates.
                return LeaseRecord(generation, "", "?", 0, 0.0, 0.0, "")
        return None

    def write(self, lease_id: str, record: LeaseRecord) -> None:
        """Create generation `record.generation`; ObjectExists if another won it."""
        doc = {
            "holder": record.holder,
            "host": record.host,
            "pid": record.pid,
            "expires": record.expires,
            "taken": record.taken,
            "what": record.what,
            "data": record.data,
            "host_id": record.host_id,
        }
        name = _name(lease_id, record.generation)
        self.backend.create(name, self.sealer.seal(json.dumps(doc).encode(), _AD))

    def prune(self, lease_id: str, below: int) -> None:
        """Drop generations older than `below` - KEEP (nobody reads them)."""
        prefix = f"{LEASES_PREFIX}{lease_id}/"
        for obj in self.backend.list(prefix):
            tail = obj.name[len(prefix) :]
            if tail.isdigit() and int(tail) < below - _KEEP_GENERATIONS:
                try:
                    self.backend.delete(obj.name)
                except (ObjectNotFound, StorageError):
                    pass


class Lease:
    """A held lease; renews itself on a daemon thread until released."""

    def __init__(self, store: LeaseStore, lease_id: str, what: str, ttl: float = DEFAULT_TTL):
        self.store = store
        self.lease_id = lease_id
        self.what = what
        self.ttl = ttl
        self.holder = os.urandom(8).hex()
        self.generation = -1
        self.expires = 0.0
        self.lost = ""
        self.data: dict[str, object] = {}
        # The record of a holder that died holding the lease: its notes say
        # what it left behind for the new holder to clean up.
        self.inherited: LeaseRecord | None = None
        self._taken = 0.0
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None

    def _record(self, generation: int, expires: float) -> LeaseRecord:
        return LeaseRecord(
            generation=generation,
            holder=self.holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            expires=expires,
            taken=self._taken,
            what=self.what,
            data=dict(self.data),
            host_id=host_id(),
        )

    def acquire(self) -> Lease:
        """Take the lease or raise LeaseBusy naming its holder."""
        for _ in range(3):
            current = self.store.current(self.lease_id)
            if current is not None and not current.expired():
                raise LeaseBusy(f"{self.what} is busy: held by {current.describe()}")
            generation = 0 if current is None else current.generation + 1
            self._taken = time.time()
            expires = self._taken + self.ttl
            try:
                self.store.write(self.lease_id, self._record(generation, expires))
            except ObjectExists:
                continue  # another host took it first: look again
            self.generation, self.expires = generation, expires
            if not self.store.backend.capabilities.atomic_create:
                self.release()
                raise LeaseBusy(
                    f"cannot lease {self.what}: the repository's storage has no atomic "
                    "exclusive create, so two hosts could both take the lease"
                )
            if current is not None and current.data:
                self.inherited = current  # its notes: what it may have left behind
            try:
                self.store.prune(self.lease_id, generation)
            except StorageError:
                pass  # old generations cost nothing but space
            self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="lease")
            self._thread.start()
            return self
        raise LeaseBusy(f"{self.what} is busy: other hosts are taking its lease")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except LeaseLost:
                return
            except StorageError:
                continue  # verify() tells the job once it matters

    def renew(self) -> None:
        with self._mutex:
            if self.lost:
                raise LeaseLost(self.lost)
            expires = time.time() + self.ttl
            try:
                self.store.write(self.lease_id, self._record(self.generation + 1, expires))
            except ObjectExists:
                # Ours, if a write that reported failure had in fact landed
                # (a retried request); anyone else's means we lost the lease.
                current = self.store.current(self.lease_id)
                if current is None or current.holder != self.holder:
                    self.lost = f"the lease of {self.what} was taken over by another host"
                    raise LeaseLost(self.lost) from None
                self.generation = current.generation
                self.expires = current.expires
                return
            self.generation += 1
            self.expires = expires

    def annotate(self, **notes: object) -> None:
        """Record notes (JSON values) in the lease at once, e.g. what a crash
        would leave behind; raises LeaseLost if the lease passed on."""
        with self._mutex:
            self.data.update(notes)
        self.renew()

    def verify(self) -> None:
        """Raise LeaseLost unless the lease is certainly still ours for a while:
        call before committing work (a recovery point)."""
        with self._mutex:
            if self.lost:
                raise LeaseLost(self.lost)
            if time.time() > self.expires - self.ttl / 8:
                raise LeaseLost(f"the lease of {self.what} could not be renewed in time")
        current = self.store.current(self.lease_id)
        if current is None or current.holder != self.holder:
            raise LeaseLost(f"the lease of {self.what} passed to another host")

    def release(self) -> None:
        """Hand the lease back (a free generation), so the next taker need not wait."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._mutex:
            if self.lost or self.generation < 0:
                return
            try:
                self.store.write(self.lease_id, self._record(self.generation + 1, 0.0))
                self.generation += 1
            except (ObjectExists, StorageError):
                pass  # taken over, or storage down: it expires by itself
            self.lost = "released"

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
