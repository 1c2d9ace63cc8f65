"""Locks: shared holders coexist, exclusive excludes everyone, stale locks are ignored."""

from __future__ import annotations

import os
import threading
import time

import pytest

from strongroom.errors import RepositoryLocked
from strongroom.repository import locks as locks_module
from strongroom.repository.locks import list_locks, remove_locks
from strongroom.repository.repo import Repository
from tests.helpers.locks import dead_pid, write_lock


def test_shared_locks_coexist(memory_repo: Repository) -> None:
    a = memory_repo.lock()
    b = memory_repo.lock()
    assert len(list_locks(memory_repo.backend, memory_repo.sealer)) == 2
    a.release()
    b.release()
    assert list_locks(memory_repo.backend, memory_repo.sealer) == []


def test_exclusive_excludes_and_is_excluded(memory_repo: Repository) -> None:
    shared = memory_repo.lock()
    with pytest.raises(RepositoryLocked):
        memory_repo.lock(exclusive=True)
    # The failed attempt left no lock of its own behind.
    assert len(list_locks(memory_repo.backend, memory_repo.sealer)) == 1
    shared.release()
    exclusive = memory_repo.lock(exclusive=True)
    with pytest.raises(RepositoryLocked):
        memory_repo.lock()
    with pytest.raises(RepositoryLocked):
        memory_repo.lock(exclusive=True)
    exclusive.release()
    memory_repo.lock(exclusive=True).release()


def test_lock_of_a_live_process_blocks(memory_repo: Repository) -> None:
    write_lock(memory_repo, pid=os.getpid())
    with pytest.raises(RepositoryLocked, match="shared lock by someone"):
        memory_repo.lock(exclusive=True)


def test_lock_of_a_dead_process_is_stale_and_ignored(memory_repo: Repository) -> None:
    name = write_lock(memory_repo, pid=dead_pid(), exclusive=True)
    (info,) = list_locks(memory_repo.backend, memory_repo.sealer)
    assert info.name == name and info.is_stale()
    held = memory_repo.lock(exclusive=True)  # ignored
    held.release()
    removed = remove_locks(memory_repo.backend, memory_repo.sealer, all_locks=False)
    assert [r.name for r in removed] == [name]
    assert list_locks(memory_repo.backend, memory_repo.sealer) == []


def test_old_lock_is_stale_even_from_another_host(memory_repo: Repository) -> None:
    write_lock(memory_repo, pid=1, host="elsewhere", age=locks_module.STALE_SECONDS + 60)
    fresh = write_lock(memory_repo, pid=1, host="elsewhere")
    removed = remove_locks(memory_repo.backend, memory_repo.sealer, all_locks=False)
    assert len(removed) == 1
    # A fresh lock of another host cannot be judged by pid: it is live.
    assert [i.name for i in list_locks(memory_repo.backend, memory_repo.sealer)] == [fresh]
    with pytest.raises(RepositoryLocked):
        memory_repo.lock(exclusive=True)
    assert len(remove_locks(memory_repo.backend, memory_repo.sealer, all_locks=True)) == 1


def test_unreadable_lock_objects_are_skipped(memory_repo: Repository) -> None:
    memory_repo.backend.create("locks/" + "ab" * 32, b"garbage")
    assert list_locks(memory_repo.backend, memory_repo.sealer) == []


def test_lost_lock_is_taken_again_before_a_point_is_committed(memory_repo: Repository) -> None:
    """A writer whose lock was removed commits only under a new lock (and after
    re-checking what it relied on: tests/repository/test_lock_lapse.py)."""
    memory_repo.held_lock = memory_repo.lock()
    memory_repo.save_point({"kind": "files", "n": 1})
    remove_locks(memory_repo.backend, memory_repo.sealer, all_locks=True)
    memory_repo.save_point({"kind": "files", "n": 2})
    assert len(memory_repo.list_point_ids()) == 2
    (now_held,) = list_locks(memory_repo.backend, memory_repo.sealer)
    assert now_held.name == memory_repo.held_lock.name
    memory_repo.held_lock.release()


def test_lock_is_refreshed(memory_repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks_module, "REFRESH_SECONDS", 0.05)
    held = memory_repo.lock()
    first = held.name
    deadline = time.monotonic() + 5
    while held.name == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert held.name != first
    held.release()
    # Every refresh replaced the old object: nothing is left after release.
    assert list_locks(memory_repo.backend, memory_repo.sealer) == []


def test_refresher_stuck_past_reacquire_leaves_the_new_lock_alone(
    memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow storage holds the old refresher inside a check while the lock is
    taken again; when it returns it must neither mark the new lock lapsed (its
    own object was removed by reacquire) nor replace the new lock's name."""
    monkeypatch.setattr(locks_module, "REFRESH_SECONDS", 0.05)
    monkeypatch.setattr(locks_module, "_JOIN_SECONDS", 0.05, raising=False)
    backend = memory_repo.backend
    exists = backend.exists
    entered, gate = threading.Event(), threading.Event()
    held = memory_repo.lock()
    stuck = held._thread

    def slow_exists(name: str) -> bool:
        if threading.current_thread() is stuck:
            entered.set()
            gate.wait(10)
        return exists(name)

    backend.exists = slow_exists  # type: ignore[method-assign]
    assert entered.wait(5)
    held.reacquire()
    new = held.name
    gate.set()
    assert stuck is not None
    stuck.join(5)
    assert not stuck.is_alive()
    assert held.lapsed() is None
    assert held.name == new
    assert [i.name for i in list_locks(backend, memory_repo.sealer)] == [new]
    time.sleep(0.2)  # the new refresher still runs and refreshes
    assert held.lapsed() is None
    assert [i.name for i in list_locks(backend, memory_repo.sealer)] == [held.name]
    held.release()
