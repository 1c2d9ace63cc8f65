"""The intake's `store`: records are verified and encrypted outside its
lock, and what looked stored before the lock is asked again under it: after
an idle gap (a prune may have removed it) the chunk is stored again."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.errors import RepositoryError, StorageError
from strongroom.repository import bundle
from strongroom.repository.format import BlobType
from strongroom.services.agent_intake import Intake
from tests.conftest import init_local_repository
from tests.helpers.cli import PASSWORD


def _bundle(intake: Intake, data: bytes) -> tuple[bytes, bytes]:
    cid = intake.repo.chunk_id(data)
    payload = intake.repo.compressor.pack(data)
    return cid, bundle.encode([bundle.Record(cid, BlobType.DATA, len(data), payload)])


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    """An intake on a fresh local repository, closed after the test."""
    init_local_repository(tmp_path)
    opened = Intake(str(tmp_path), PASSWORD.encode())
    try:
        yield opened
    finally:
        opened.close()


def test_a_chunk_pruned_during_an_idle_gap_is_stored_again(intake: Intake, tmp_path: Path) -> None:
    data = os.urandom(5000)
    cid, blob = _bundle(intake, data)
    assert intake.store(blob).added == 1
    assert intake.store(blob).added == 0  # held: not stored twice
    intake._release()  # the idle gap: a prune may run now ...
    for pack in (tmp_path / "data").rglob("*"):
        if pack.is_file():
            pack.unlink()  # ... and it removed the pack
    assert intake.repo.has_chunk(cid)  # the session's word, until the lock
    stored = intake.store(blob)
    assert (stored.received, stored.added) == (1, 1)
    assert intake.repo.load_chunk(cid, BlobType.DATA) == data


def _gated_writes(intake: Intake, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> Gate:
    """Make the intake's pack writes wait at a gate (the first one fails if
    `fail`), so a test can hold one upload in flight."""
    gate = Gate()
    real = intake.repo.write_pack

    def write_pack(*args: Any) -> Any:
        gate.entered.put(threading.current_thread().name)
        assert gate.go.wait(10)
        if fail and not gate.failed:
            gate.failed = True
            raise StorageError("the store went away")
        return real(*args)

    monkeypatch.setattr(intake.repo, "write_pack", write_pack)
    return gate


class Gate:
    def __init__(self) -> None:
        self.entered: queue.Queue[str] = queue.Queue()
        self.go = threading.Event()
        self.failed = False


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:
            out["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_agents_upload_at_once_and_a_shared_chunk_is_written_once(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _gated_writes(intake, monkeypatch)
    shared, own = os.urandom(7000), os.urandom(6000)
    shared_id, first = _bundle(intake, shared)
    own_id = intake.repo.chunk_id(own)
    second = bundle.encode(
        [
            bundle.Record(
                shared_id, BlobType.DATA, len(shared), intake.repo.compressor.pack(shared)
            ),
            bundle.Record(own_id, BlobType.DATA, len(own), intake.repo.compressor.pack(own)),
        ]
    )
    a, a_out = _in_thread(lambda: intake.store(first))
    gate.entered.get(timeout=10)  # the first holds `shared` in flight
    b, b_out = _in_thread(lambda: intake.store(second))
    gate.entered.get(timeout=10)  # the second writes its own chunk meanwhile:
    # both uploads are in flight at once (no lock held across them)
    assert a.is_alive() and b.is_alive()
    gate.go.set()
    a.join(10)
    b.join(10)
    assert (a_out["value"].added, b_out["value"].added) == (1, 1)  # `shared` once
    assert intake.repo.load_chunk(shared_id, BlobType.DATA) == shared
    assert intake.repo.load_chunk(own_id, BlobType.DATA) == own
    assert len(intake.repo.index.lookup_all(shared_id)) == 1


def test_a_failed_upload_fails_the_call_waiting_on_it_and_a_resend_stores_it(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _gated_writes(intake, monkeypatch, fail=True)
    data = os.urandom(5000)
    cid, blob = _bundle(intake, data)
    a, a_out = _in_thread(lambda: intake.store(blob))
    gate.entered.get(timeout=10)
    claimed = threading.Event()
    real_claim = intake._claim

    def claim(records: Any) -> Any:
        found = real_claim(records)
        claimed.set()
        return found

    monkeypatch.setattr(intake, "_claim", claim)
    b, b_out = _in_thread(lambda: intake.store(blob))
    assert claimed.wait(10)  # b found a's write in flight, and waits on it
    gate.go.set()
    a.join(10)
    b.join(10)
    assert isinstance(a_out["error"], StorageError)
    assert isinstance(b_out["error"], RepositoryError)  # never acknowledged unwritten
    assert not intake._in_flight and not intake._active
    assert not intake.repo.has_chunk(cid)
    assert intake.store(blob).added == 1  # the agent sends it again
    assert intake.repo.load_chunk(cid, BlobType.DATA) == data


def test_an_upload_in_flight_keeps_the_shared_lock(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _gated_writes(intake, monkeypatch)
    _cid, blob = _bundle(intake, os.urandom(5000))
    a, a_out = _in_thread(lambda: intake.store(blob))
    gate.entered.get(timeout=10)
    monkeypatch.setattr("strongroom.services.agent_intake.IDLE_SECONDS", 0.0)
    intake._release_if_idle()  # idle by the clock, but an upload is in flight
    assert intake.repo.held_lock is not None
    gate.go.set()
    a.join(10)
    assert a_out["value"].added == 1
    intake._release_if_idle()  # now idle: a prune may run
    assert intake.repo.held_lock is None
