"""Cluster-wide leases on a repository on disk: one holder at a time, generations
created exclusively, expiry for dead holders, and a holder that learns when its
lease passed on."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from typing import Any

import pytest

from strongroom.errors import StorageError
from strongroom.hostid import host_id
from strongroom.repository.leases import (
    LEASES_PREFIX,
    Lease,
    LeaseBusy,
    LeaseLost,
    LeaseRecord,
    LeaseStore,
)
from strongroom.repository.repo import Repository
from strongroom.storage import Backend

WHAT = "VM vm1"


def new_lease(store: LeaseStore, lease_id: str, ttl: float = 60.0) -> Lease:
    return Lease(store, lease_id, WHAT, ttl)


@pytest.fixture
def lease_id(local_repo: Repository) -> str:
    return local_repo.lease_id("vm:vm1")


def generations(repo: Repository, lease_id: str) -> list[str]:
    return sorted(o.name for o in repo.backend.list(f"{LEASES_PREFIX}{lease_id}/"))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def foreign(repo: Repository, lease_id: str, host: str, pid: int, expires: float) -> None:
    """Write the next generation as another holder would have."""
    store = repo.leases()
    current = store.current(lease_id)
    store.write(
        lease_id,
        LeaseRecord(
            generation=0 if current is None else current.generation + 1,
            holder="f0f0f0f0f0f0f0f0",
            host=host,
            pid=pid,
            expires=expires,
            taken=time.time(),
            what=WHAT,
            # A pid is judged only in its own pid namespace (strongroom/hostid.py).
            host_id=host_id() if host == socket.gethostname() else "elsewhere",
        ),
    )


def test_acquire_renew_release_are_generations(local_repo: Repository, lease_id: str) -> None:
    store = local_repo.leases()
    assert store.current(lease_id) is None
    lease = new_lease(store, lease_id).acquire()
    try:
        record = store.current(lease_id)
        assert record is not None and record.generation == 0 == lease.generation
        assert record.holder == lease.holder and not record.free and not record.expired()
        assert (record.host, record.pid, record.what) == (socket.gethostname(), os.getpid(), WHAT)
        assert time.time() + 55 < record.expires <= time.time() + 60
        first_expiry = record.expires
        lease.renew()
        record = store.current(lease_id)
        assert record is not None and record.generation == 1 == lease.generation
        assert record.expires >= first_expiry and record.taken == lease._taken
        lease.verify()
    finally:
        lease.release()
    record = store.current(lease_id)
    assert record is not None and record.generation == 2 and record.free and record.expired()
    # Handed back: the next taker need not wait, and takes the next generation.
    with new_lease(store, lease_id).acquire() as again:
        assert again.generation == 3
        for _ in range(10):
            again.renew()
    with new_lease(store, lease_id).acquire() as last:
        assert last.generation == 15
    # Old generations are dropped as leases are taken; nobody reads them.
    names = generations(local_repo, lease_id)
    assert len(names) <= 7, names
    assert names[-1].endswith(f"{16:016d}")


def test_a_taker_during_a_held_lease_is_busy(local_repo: Repository, lease_id: str) -> None:
    store = local_repo.leases()
    with new_lease(store, lease_id).acquire() as held:
        with pytest.raises(LeaseBusy, match=r"VM vm1 is busy: held by .* \(pid \d+\)") as err:
            new_lease(store, lease_id).acquire()
        assert f"pid {os.getpid()}" in str(err.value)
        assert store.current(lease_id).holder == held.holder  # type: ignore[union-attr]
    with new_lease(store, lease_id).acquire():
        pass


def test_two_concurrent_acquirers_exactly_one_wins(local_repo: Repository, lease_id: str) -> None:
    store = local_repo.leases()

    def take(n: int, barrier: threading.Barrier, outcome: dict[int, Any]) -> None:
        barrier.wait()
        try:
            outcome[n] = new_lease(store, lease_id).acquire()
        except LeaseBusy as err:
            outcome[n] = err

    for round_ in range(50):
        barrier = threading.Barrier(2)
        outcome: dict[int, Any] = {}
        threads = [threading.Thread(target=take, args=(n, barrier, outcome)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        won = [v for v in outcome.values() if isinstance(v, Lease)]
        lost = [v for v in outcome.values() if isinstance(v, LeaseBusy)]
        assert len(won) == 1 and len(lost) == 1, (round_, outcome)
        record = store.current(lease_id)
        assert record is not None and record.holder == won[0].holder
        won[0].release()


def test_a_dead_holder_on_this_host_gives_way_at_once(
    local_repo: Repository, lease_id: str
) -> None:
    foreign(local_repo, lease_id, socket.gethostname(), dead_pid(), time.time() + 600)
    with new_lease(local_repo.leases(), lease_id).acquire() as lease:
        assert lease.generation == 1


def test_another_hosts_lease_holds_until_it_expires(local_repo: Repository, lease_id: str) -> None:
    # Another host's pid means nothing here: only its expiry counts.
    foreign(local_repo, lease_id, "elsewhere", dead_pid(), time.time() + 1.0)
    with pytest.raises(LeaseBusy, match="held by elsewhere"):
        new_lease(local_repo.leases(), lease_id).acquire()
    time.sleep(1.1)
    with new_lease(local_repo.leases(), lease_id).acquire() as lease:
        assert lease.generation == 1


class Partition:
    """A backend whose creates fail while `cut`: a holder cut off from the repository."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cut = False

    def create(self, name: str, data: Any) -> None:
        if self.cut:
            raise StorageError("network unreachable")
        self.backend.create(name, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def test_verify_says_lost_once_another_host_took_over_an_expired_lease(
    local_repo: Repository, lease_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    partition = Partition(local_repo.backend)
    cut_off = new_lease(LeaseStore(partition, local_repo.sealer), lease_id, ttl=0.8).acquire()
    try:
        cut_off.verify()
        partition.cut = True  # it can no longer renew
        with monkeypatch.context() as m:
            m.setattr(socket, "gethostname", lambda: "host-b")
            other = new_lease(local_repo.leases(), lease_id)
            with pytest.raises(LeaseBusy):
                other.acquire()  # not yet expired
            time.sleep(0.9)
            other.acquire()
        try:
            record = local_repo.leases().current(lease_id)
            assert record is not None and record.holder == other.holder
            assert record.host == "host-b" and record.generation >= 1
            with pytest.raises(LeaseLost):
                cut_off.verify()
            partition.cut = False  # back online: it learns the lease passed on
            with pytest.raises(LeaseLost):
                cut_off.renew()
            with pytest.raises(LeaseLost, match="VM vm1"):
                cut_off.verify()
        finally:
            cut_off.release()  # must not hand back what another holds
            record = local_repo.leases().current(lease_id)
            assert record is not None and record.holder == other.holder and not record.free
            other.release()
    finally:
        cut_off.release()


def test_verify_says_lost_when_a_newer_generation_is_not_ours(
    local_repo: Repository, lease_id: str
) -> None:
    """A holder whose lease another host wrote over (a clock running ahead there)
    must not commit."""
    lease = new_lease(local_repo.leases(), lease_id).acquire()
    try:
        foreign(local_repo, lease_id, "elsewhere", 1, time.time() + 60)
        with pytest.raises(LeaseLost, match="passed to another host"):
            lease.verify()
        with pytest.raises(LeaseLost, match="taken over"):
            lease.renew()
    finally:
        lease.release()
    record = local_repo.leases().current(lease_id)
    assert record is not None and record.host == "elsewhere" and not record.free


class _Ambiguous:
    """A backend whose next create lands but reports an error (a lost answer)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ambiguous = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create(self, name: str, data: bytes) -> None:
        self.inner.create(name, data)
        if self.ambiguous:
            self.ambiguous -= 1
            raise StorageError("timeout after the write landed")


def test_a_renewal_that_landed_despite_an_error_keeps_the_lease(local_repo: Repository) -> None:
    backend = _Ambiguous(local_repo.backend)
    store = LeaseStore(backend, local_repo.sealer)  # type: ignore[arg-type]
    lease_id = local_repo.lease_id("vm:x")
    lease = Lease(store, lease_id, "VM x", ttl=60).acquire()
    backend.ambiguous = 1
    with pytest.raises(StorageError):
        lease.renew()  # landed, reported as failed
    lease.renew()  # finds its own record: still ours
    lease.verify()
    lease.release()
    Lease(store, lease_id, "VM x", ttl=60).acquire().release()  # handed back for real


def test_a_live_holder_with_our_host_name_elsewhere_keeps_its_lease(
    local_repo: Repository,
) -> None:
    store = local_repo.leases()
    lease_id = local_repo.lease_id("vm:x")
    record = LeaseRecord(
        0, "aa", socket.gethostname(), 4_000_000, time.time() + 60, time.time(), "VM x",
        host_id="another-container",
    )  # fmt: skip
    store.write(lease_id, record)
    with pytest.raises(LeaseBusy):
        Lease(store, lease_id, "VM x").acquire()


def test_an_unreadable_generation_does_not_block_the_lease(local_repo: Repository) -> None:
    store = local_repo.leases()
    lease_id = local_repo.lease_id("vm:x")
    local_repo.backend.create(f"{LEASES_PREFIX}{lease_id}/0000000000000007", b"junk")
    with Lease(store, lease_id, "VM x").acquire() as lease:
        assert lease.generation == 8
