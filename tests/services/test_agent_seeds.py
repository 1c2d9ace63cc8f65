"""What an agent reads of the server's seeds is verified as any server answer
(services/agent_seeds.py): malformed, duplicate or oddly named seeds are left
out of the list; a pinned one that does not decode is an error."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest

from strongroom.errors import RemoteError, RemoteRefused
from strongroom.model.kinds import PointKind
from strongroom.model.seed import Seed, SeedKind
from strongroom.remote.client import Client
from strongroom.remote.store import RemoteStore
from strongroom.services.agent_seeds import server_seed, server_seeds


def _doc(name: str) -> dict[str, Any]:
    seed = Seed(name, SeedKind.OS, PointKind.FILES, secrets.token_hex(32), datetime.now(UTC))
    return {"id": secrets.token_hex(32), **seed.to_doc()}


class _Answers:
    """A store whose server answers what the test says."""

    def __init__(self, listed: list[dict[str, Any]], one: dict[str, Any]) -> None:
        self.listed, self.one = listed, one

    def seeds(self) -> list[dict[str, Any]]:
        return self.listed

    def seed(self, ref: str) -> dict[str, Any]:
        return self.one


def test_only_well_formed_seeds_are_taken_from_the_server() -> None:
    good, other = _doc("debian"), _doc("app")
    hostile = [
        {**_doc("x"), "id": "../points/" + "a" * 54},  # not an id
        {**_doc("y"), "id": "A" * 64},
        {**_doc("z"), "name": "../../etc"},
        {**_doc("w"), "tree": "not hex"},
        {**_doc("v"), "content": "vm"},
        {**_doc("u"), "version": 99},
        {k: v for k, v in _doc("t").items() if k != "time"},
        {**good, "name": "again"},  # the same id twice: the first kept
    ]
    store = cast(RemoteStore, _Answers([good, *hostile, other], good))
    assert [(s.name, s.id) for s in server_seeds(store)] == [
        ("app", other["id"]),
        ("debian", good["id"]),
    ]
    assert server_seed(store, "debian").tree == good["tree"]
    broken = cast(RemoteStore, _Answers([], {**good, "tree": "x"}))
    with pytest.raises(RemoteError, match="seed debian is malformed"):
        server_seed(broken, "debian")


def test_an_older_server_without_seeds_means_no_seeds(caplog: pytest.LogCaptureFixture) -> None:
    """A server of an earlier version answers 404 to the seed list: the agent
    backs up without seeds (one warning) instead of failing; other refusals
    still fail, and a pinned seed the server lacks is an error."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/agent/seeds":
            return httpx.Response(404, json={"error": "not found"})
        return httpx.Response(403, json={"error": "forbidden"})

    client = Client(["http://old"], http=httpx.Client(transport=httpx.MockTransport(answer)))
    store = object.__new__(RemoteStore)
    store.client = client
    with caplog.at_level(logging.WARNING):
        assert server_seeds(store) == []
    assert "older version" in caplog.text
    with pytest.raises(RemoteRefused, match="403 forbidden"):
        server_seed(store, "debian")
