"""However many agents upload at once, the server receives and stores at most
`UPLOAD_SLOTS` bundles at a time (the others wait in their sockets, their
bodies unread), so its memory is bounded by the slots, not by the fleet; and
every upload is still answered and stored."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from strongroom.repository import bundle
from strongroom.repository.format import BlobType
from strongroom.server import agent_api, create_app
from strongroom.server.agent_api import agent_routes
from strongroom.services.accounts import Accounts
from strongroom.services.agent_intake import Intake
from strongroom.services.agents import Agents
from tests.conftest import init_local_repository
from tests.helpers.cli import PASSWORD
from tests.server.agent_fixtures import Clock, Site, bearer
from tests.server.conftest import ADMIN_PASSWORD, sign_in


def test_uploads_beyond_the_slots_wait_and_all_are_stored(
    accounts: Accounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_api, "UPLOAD_SLOTS", 2)
    init_local_repository(tmp_path / "repo")
    intake = Intake(str(tmp_path / "repo"), PASSWORD.encode())
    busy, most = [0], [0]
    lock = threading.Lock()
    real_store = intake.store

    def store(blob: bytes, *more: Any) -> Any:
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        try:
            time.sleep(0.2)  # long enough for every sender to be waiting
            return real_store(blob, *more)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(intake, "store", store)
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    clock = Clock()
    app = create_app(
        accounts, lambda: [], routers=[agent_routes(Agents(accounts.catalog, clock), intake)]
    )
    try:
        with TestClient(app, base_url="http://testserver") as client:
            csrf = sign_in(client, "admin", ADMIN_PASSWORD)
            creds = Site(client, csrf, intake, clock, tmp_path / "repo").enroll("pc-1")
            datas = [os.urandom(5000) for _ in range(6)]
            answers: list[int] = []

            def send(data: bytes) -> None:
                cid = intake.repo.chunk_id(data)
                blob = bundle.encode(
                    [
                        bundle.Record(
                            cid, BlobType.DATA, len(data), intake.repo.compressor.pack(data)
                        )
                    ]
                )
                answer = client.put(
                    "/api/v1/agent/chunks", content=blob,
                    headers={**bearer(creds), "Content-Type": bundle.MEDIA_TYPE},
                )  # fmt: skip
                answers.append(answer.status_code)

            threads = [threading.Thread(target=send, args=(d,)) for d in datas]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert answers == [200] * 6 and most[0] == 2
        for data in datas:
            assert intake.repo.load_chunk(intake.repo.chunk_id(data), BlobType.DATA) == data
    finally:
        intake.close()
