"""A paused backup, or one whose lock was removed, loses no data (docs/design.md 4.4).

The attack: a backup deduplicates against a pack that no point references yet;
its lock is removed (`unlock --remove-all`) or the backup is paused past the
stale age; prune runs and deletes the pack; the backup resumes. Its lock
refresher used to write a fresh lock regardless, so `verify` passed and a point
naming deleted data was committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from strongroom.errors import RepositoryError, RepositoryLocked
from strongroom.repository import format as fmt
from strongroom.repository import locks as locks_module
from strongroom.repository.format import BlobType
from strongroom.repository.locks import list_locks, remove_locks
from strongroom.repository.prune import execute_prune, plan_prune
from strongroom.repository.repo import Repository
from strongroom.storage.memory import MemoryBackend
from tests.helpers.cli import PASSWORD


def store(repo: Repository, data: bytes) -> bytes:
    """What a backup does with one chunk: deduplicate, else queue it."""
    cid = repo.chunk_id(data)
    if not repo.has_chunk(cid):
        repo.add_sealed(cid, BlobType.DATA, repo.seal_chunk(cid, BlobType.DATA, data), len(data))
    return cid


def packs(repo: Repository) -> set[bytes]:
    return set(repo.list_packs())


@pytest.fixture
def backend() -> Iterator[MemoryBackend]:
    backend = MemoryBackend()
    Repository.init(backend, PASSWORD.encode())
    yield backend


def open_repo(backend: MemoryBackend) -> Repository:
    return Repository.open(backend, PASSWORD.encode())


@pytest.fixture
def unreferenced_pack(backend: MemoryBackend) -> bytes:
    """A pack holding b"precious" that no point references (a killed backup's, or
    a forgotten point's): exactly what prune deletes."""
    writer = open_repo(backend)
    store(writer, b"precious" * 1000)
    writer.flush()
    (pack,) = writer.packs_written
    return pack


def prune_now(backend: MemoryBackend) -> None:
    """A prune by another process: exclusive lock, delete what no point uses."""
    pruner = open_repo(backend)
    pruner.held_lock = pruner.lock(exclusive=True)
    try:
        execute_prune(pruner, plan_prune(pruner, set()))
    finally:
        pruner.held_lock.release()


class Clock:
    """The lock module's clock, movable: a laptop's sleep moves wall time on."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    fake = SimpleNamespace(time=c.time, strftime=time.strftime, localtime=time.localtime)
    monkeypatch.setattr(locks_module, "time", fake)
    return c


def test_removed_lock_is_not_resurrected_and_nothing_is_committed(
    backend: MemoryBackend, unreferenced_pack: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks_module, "REFRESH_SECONDS", 0.3)
    backup = open_repo(backend)
    backup.held_lock = backup.lock()
    cid = store(backup, b"precious" * 1000)  # deduplicated against the pack
    assert backup.packs_relied_on == {unreferenced_pack}
    # "repository is locked" -> the user runs `unlock --remove-all`, then prune.
    remove_locks(backend, backup.sealer, all_locks=True)
    prune_now(backend)
    assert unreferenced_pack not in packs(backup)
    time.sleep(0.8)  # the refresher wakes: it must not write our lock back
    assert list_locks(backend, backup.sealer) == []
    assert backup.held_lock.lapsed() is not None
    tree = backup.put_chunk(BlobType.TREE, b"tree naming " + cid)
    backup.flush()
    with pytest.raises(RepositoryError, match="were removed") as err:
        backup.save_point({"kind": "files", "tree": tree.hex(), "parent": None})
    assert err.value.exit_code == 1
    assert backup.list_point_ids() == []
    backup.held_lock.release()
    assert list_locks(backend, backup.sealer) == []


def test_paused_backup_does_not_commit_over_a_prune(
    backend: MemoryBackend,
    unreferenced_pack: bytes,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGSTOP or sleep past the stale age: others may prune; on waking, the
    refresher must not renew the lock, and the commit re-checks and fails."""
    monkeypatch.setattr(locks_module, "REFRESH_SECONDS", 0.3)
    backup = open_repo(backend)
    backup.held_lock = backup.lock()
    store(backup, b"precious" * 1000)
    clock.offset = 2 * locks_module.STALE_SECONDS  # asleep for an hour
    prune_now(backend)  # our lock is stale to everyone: prune may run
    time.sleep(0.8)  # we wake; the refresher runs first
    assert [i.name for i in list_locks(backend, backup.sealer)] == [backup.held_lock.name]
    assert "not refreshed" in (backup.held_lock.lapsed() or "")
    backup.flush()
    with pytest.raises(RepositoryError, match="nothing committed"):
        backup.save_point({"kind": "files", "tree": "00" * 32, "parent": None})
    assert backup.list_point_ids() == []
    backup.held_lock.release()


def test_lapsed_backup_commits_under_a_new_lock_when_nothing_was_lost(
    backend: MemoryBackend, unreferenced_pack: bytes, clock: Clock
) -> None:
    backup = open_repo(backend)
    backup.held_lock = backup.lock()
    first = backup.held_lock.name
    store(backup, b"precious" * 1000)
    store(backup, b"new data" * 1000)
    clock.offset = 2 * locks_module.STALE_SECONDS
    backup.flush()
    backup.save_point({"kind": "files", "tree": "00" * 32, "parent": None})
    assert len(backup.list_point_ids()) == 1
    # A new lock was taken before the re-check, and it is the one held now.
    (held,) = list_locks(backend, backup.sealer)
    assert held.name == backup.held_lock.name != first
    assert backup.held_lock.lapsed() is None
    backup.held_lock.release()


def test_lapsed_backup_whose_parent_was_forgotten_does_not_commit(
    backend: MemoryBackend, clock: Clock
) -> None:
    """Unchanged files reuse the parent's chunks without asking the index: the
    parent point must still exist, or a prune may have taken its chunks."""
    backup = open_repo(backend)
    parent = backup.save_point({"kind": "files", "tree": "00" * 32, "parent": None})
    backup.held_lock = backup.lock()
    clock.offset = 2 * locks_module.STALE_SECONDS
    backup.delete_point(parent)  # `forget` meanwhile
    with pytest.raises(RepositoryError, match=f"parent point {parent[:8]}"):
        backup.save_point({"kind": "files", "tree": "00" * 32, "parent": parent})
    assert backup.list_point_ids() == []
    backup.held_lock.release()


def test_lapsed_backup_does_not_commit_while_a_prune_holds_the_lock(
    backend: MemoryBackend, clock: Clock
) -> None:
    backup = open_repo(backend)
    backup.held_lock = backup.lock()
    clock.offset = 2 * locks_module.STALE_SECONDS
    pruner = open_repo(backend)
    exclusive = pruner.lock(exclusive=True)  # taken while our lock looked stale
    with pytest.raises(RepositoryLocked, match="cannot be taken again"):
        backup.save_point({"kind": "files", "tree": "00" * 32, "parent": None})
    assert backup.list_point_ids() == []
    exclusive.release()
    backup.held_lock.release()


def test_refresh_does_not_bridge_a_removal_during_its_own_write(
    memory_repo: Repository,
) -> None:
    """Paused between its check and its create, the refresher must look again
    once the new object exists: the old one was removed meanwhile."""
    held = memory_repo.lock()
    old = held.name
    create = memory_repo.backend.create

    def create_after_removal(name: str, data: bytes) -> None:
        if name.startswith(fmt.LOCKS_PREFIX):
            memory_repo.backend.delete(old)  # `unlock --remove-all` right then
        create(name, data)

    memory_repo.backend.create = create_after_removal  # type: ignore[method-assign]
    assert held._refresh_once() is False
    assert list_locks(memory_repo.backend, memory_repo.sealer) == []
    assert "removed" in (held.lapsed() or "")
    held.release()


def test_lapsed_lock_stays_lapsed(memory_repo: Repository, clock: Clock) -> None:
    held = memory_repo.lock()
    clock.offset = 2 * locks_module.STALE_SECONDS
    assert held.lapsed() is not None
    clock.offset = 0
    assert held.lapsed() is not None  # a clock going back does not revive it
    assert held._refresh_once() is False
    held.release()


def test_prune_whose_lock_lapsed_deletes_nothing(
    backend: MemoryBackend, unreferenced_pack: bytes, clock: Clock
) -> None:
    """Sibling: a paused prune must not resume deleting beside a backup that
    started while its lock looked stale."""
    pruner = open_repo(backend)
    pruner.held_lock = pruner.lock(exclusive=True)
    plan = plan_prune(pruner, set())
    clock.offset = 2 * locks_module.STALE_SECONDS
    with pytest.raises(RepositoryLocked, match="before deleting"):
        execute_prune(pruner, plan)
    assert unreferenced_pack in packs(pruner)
    assert len(pruner.list_index_files()) >= 1
    pruner.held_lock.release()


def test_backup_stores_again_a_chunk_whose_pack_is_missing(
    backend: MemoryBackend, unreferenced_pack: bytes
) -> None:
    backend.delete(fmt.pack_name(unreferenced_pack.hex()))
    backup = open_repo(backend)
    cid = backup.chunk_id(b"precious" * 1000)
    assert backup.index.lookup(cid) is not None  # the index still names it
    assert not backup.has_chunk(cid)
    assert backup.missing_packs_seen == {unreferenced_pack}
    store(backup, b"precious" * 1000)
    backup.flush()
    assert backup.stats.chunks_added == 1
    assert backup.load_chunk(cid) == b"precious" * 1000


def test_later_point_after_a_lapse_does_not_reuse_a_pack_pruned_meanwhile(
    backend: MemoryBackend, unreferenced_pack: bytes, clock: Clock
) -> None:
    """`protect --every` keeps one session: the lapse is found (and the lock taken
    again) by a point that did not use the pruned pack; a later point of the same
    session must not deduplicate against it from the listing read before."""
    backup = open_repo(backend)
    backup.held_lock = backup.lock()
    store(backup, b"first cycle" * 1000)  # loads the index and lists the packs
    assert unreferenced_pack in backup.present_packs()
    clock.offset = 2 * locks_module.STALE_SECONDS  # asleep: our lock looks stale
    prune_now(backend)
    assert unreferenced_pack not in packs(backup)
    backup.flush()
    backup.save_point({"kind": "files", "tree": "00" * 32, "parent": None})  # re-locks
    assert backup.held_lock.lapsed() is None
    cid = store(backup, b"precious" * 1000)  # the next cycle: the pruned data again
    tree = backup.put_chunk(BlobType.TREE, b"tree naming " + cid)
    backup.flush()
    backup.save_point({"kind": "files", "tree": tree.hex(), "parent": None})
    fresh = open_repo(backend)
    assert fresh.load_chunk(cid) == b"precious" * 1000
    backup.held_lock.release()


def test_prune_checks_its_lock_before_the_first_and_every_50th_deletion(
    backend: MemoryBackend, unreferenced_pack: bytes, clock: Clock
) -> None:
    """The lock lapses while old index files are deleted (a long listing, a
    sleep): the old-index loop must check again, and the pack loop must check
    before its first deletion, not at its 50th."""
    pruner = open_repo(backend)
    for i in range(60):  # many old index files (of packs long gone)
        pruner.write_index_file({bytes([i]) * 32: []})
    pruner.held_lock = pruner.lock(exclusive=True)
    plan = plan_prune(pruner, set())
    delete = backend.delete

    def delete_then_sleep(name: str) -> None:
        delete(name)
        if name.startswith(fmt.INDEX_PREFIX):
            clock.offset = 2 * locks_module.STALE_SECONDS  # paused right after

    backend.delete = delete_then_sleep  # type: ignore[method-assign]
    with pytest.raises(RepositoryLocked, match="before deleting"):
        execute_prune(pruner, plan)
    assert unreferenced_pack in packs(pruner)
    assert len(pruner.list_index_files()) >= 10  # stopped at the 50th at the latest
    pruner.held_lock.release()
