"""The server's side of a VM's lease for agents (docs/server.md, "VMs through
the server"; docs/design.md §9i).

A VM of a cluster is backed up by whichever node of the cluster takes its
lease. Through the server, the lease is the repository's own (repository/
leases.py: generations created exclusively, the newest is the truth, expiry
on the holder's TTL), taken, renewed, verified and handed back on the
agent's behalf:
- the lease is the cluster's: its key is `vm:NAME@CLUSTER`, so two clusters
  may each have a VM of one name; only a machine of the cluster takes it
  (`NotInCluster` otherwise);
- the record names the machine as its host; its holder is a random id the
  taker receives and presents to renew, verify and hand back (a machine of
  the cluster that does not present it holds nothing). Its pid is 0 and its
  host id `agent:<machine>`, which no host's is: only the expiry frees it, so
  a dead agent's lease passes on after its TTL, as a dead host's does;
- the notes of the previous holder (the views it named before making them)
  are handed to the next taker (`inherited`), as locally, so it reaps them;
- every change is one exclusive create: of two nodes racing, one wins.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from strongroom.catalog import Machine
from strongroom.errors import UsageError
from strongroom.repository.leases import (
    Lease,
    LeaseBusy,
    LeaseLost,
    LeaseRecord,
    LeaseStore,
)
from strongroom.repository.repo import Repository
from strongroom.services.agents import check_machine_name
from strongroom.services.vms import vm_path

__all__ = ["LeaseBusy", "LeaseLost", "NotInCluster", "VmLeases", "cluster_lease_key"]

MIN_TTL = 2.0
MAX_TTL = 3600.0
MAX_NOTES = 64 << 10  # the JSON of a holder's notes
_HOLDER_LENGTH = 16  # Lease: 8 random bytes as hex


class NotInCluster(UsageError):
    """The machine is in no cluster (or not in the VM's)."""


def cluster_lease_key(cluster: str, vm: str) -> str:
    """The lease's key: the VM within its cluster."""
    return f"{vm_path(vm)}@{cluster}"


@dataclass(frozen=True)
class Taken:
    holder: str
    expires: float
    inherited: LeaseRecord | None


class _AgentLease(Lease):
    """A `Lease` held on a machine's behalf: its record names the machine;
    the server renews only when the agent asks (no thread)."""

    def __init__(self, store: LeaseStore, lease_id: str, what: str, ttl: float, machine: str):
        super().__init__(store, lease_id, what, ttl)
        self.machine = machine

    def _record(self, generation: int, expires: float) -> LeaseRecord:
        return LeaseRecord(
            generation=generation,
            holder=self.holder,
            host=self.machine,
            pid=0,
            expires=expires,
            taken=self._taken,
            what=self.what,
            data=dict(self.data),
            host_id=f"agent:{self.machine}",
        )

    def _renew_loop(self) -> None:
        return  # the agent renews through the server


class VmLeases:
    """VM leases in the intake's repository (see the module's contract)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._lock = threading.Lock()  # one change at a time in this process

    def _key(self, machine: Machine, vm: str) -> tuple[str, str]:
        check_vm_name(vm)
        if not machine.cluster:
            raise NotInCluster("this machine is in no cluster: an administrator puts it in one")
        return self._repo.lease_id(cluster_lease_key(machine.cluster, vm)), f"VM {vm}"

    def acquire(self, machine: Machine, vm: str, ttl: float) -> Taken:
        """Take the lease for `machine`; LeaseBusy naming its holder."""
        lease_id, what = self._key(machine, vm)
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise UsageError(f"a lease lasts {MIN_TTL:g} to {MAX_TTL:g} seconds")
        lease = _AgentLease(self._repo.leases(), lease_id, what, ttl, machine.name)
        with self._lock:
            lease.acquire()
        return Taken(lease.holder, lease.expires, lease.inherited)

    def _held(self, machine: Machine, vm: str, holder: str) -> _AgentLease:
        """The lease as `holder` of `machine` holds it now; LeaseLost otherwise."""
        lease_id, what = self._key(machine, vm)
        current = self._repo.leases().current(lease_id)
        ours = (
            current is not None
            and len(holder) == _HOLDER_LENGTH
            and current.holder == holder
            and current.host == machine.name
            and not current.expired()
        )
        if not ours or current is None:
            raise LeaseLost(f"the lease of {what} is not held by this backup (expired or taken)")
        ttl = max(MIN_TTL, current.expires - time.time())
        lease = _AgentLease(self._repo.leases(), lease_id, what, ttl, machine.name)
        lease.holder, lease.generation, lease.expires = holder, current.generation, current.expires
        lease._taken, lease.data = current.taken, dict(current.data)
        return lease

    def renew(
        self, machine: Machine, vm: str, holder: str, ttl: float, notes: dict[str, Any] | None
    ) -> float:
        """Extend the lease by `ttl` from now (and replace its notes when
        given); its new expiry. LeaseLost if it is not ours any more."""
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise UsageError(f"a lease lasts {MIN_TTL:g} to {MAX_TTL:g} seconds")
        if notes is not None and len(json.dumps(notes)) > MAX_NOTES:
            raise UsageError(f"a lease's notes are at most {MAX_NOTES >> 10} KiB")
        with self._lock:
            lease = self._held(machine, vm, holder)
            lease.ttl = ttl
            if notes is not None:
                lease.data = dict(notes)
            lease.renew()
        return lease.expires

    def verify(self, machine: Machine, vm: str, holder: str) -> float:
        """The expiry of the lease if `holder` holds it; LeaseLost otherwise."""
        return self._held(machine, vm, holder).expires

    def release(self, machine: Machine, vm: str, holder: str) -> None:
        """Hand the lease back (a free generation); nothing if it is not ours."""
        with self._lock:
            try:
                lease = self._held(machine, vm, holder)
            except LeaseLost:
                return
            lease.release()


def check_vm_name(name: str) -> str:
    """A VM's name through the server: the machine name rules (no `/`, `..`, NUL)."""
    try:
        return check_machine_name(name)
    except UsageError:
        raise UsageError(
            "a VM name is 1-64 letters, digits, . _ @ - (first: a letter or digit)"
        ) from None
