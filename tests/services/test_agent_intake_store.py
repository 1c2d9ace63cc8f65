"""The intake's `store`: records are verified and encrypted outside its
lock, and what looked stored before the lock is asked again under it: after
an idle gap (a prune may have removed it) the chunk is stored again."""

from __future__ import annotations

import os
from pathlib import Path

from strongroom.repository import bundle
from strongroom.repository.format import BlobType
from strongroom.services.agent_intake import Intake
from tests.conftest import init_local_repository
from tests.helpers.cli import PASSWORD


def _bundle(intake: Intake, data: bytes) -> tuple[bytes, bytes]:
    cid = intake.repo.chunk_id(data)
    payload = intake.repo.compressor.pack(data)
    return cid, bundle.encode([bundle.Record(cid, BlobType.DATA, len(data), payload)])


def test_a_chunk_pruned_during_an_idle_gap_is_stored_again(tmp_path: Path) -> None:
    init_local_repository(tmp_path)
    intake = Intake(str(tmp_path), PASSWORD.encode())
    try:
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
    finally:
        intake.close()
