"""Review: what an agent's store reads from its backup server is hostile
(remote/store.py `lacking`, services/agent_seeds.py `server_seed`): an
answer naming chunks never asked for, or malformed, is one RemoteError, and
a seed other than the one asked for is refused."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from strongroom.errors import RemoteError
from strongroom.remote.config import RepositoryInfo
from strongroom.remote.store import RemoteStore
from strongroom.services.agent_seeds import server_seed

INFO = RepositoryInfo(
    id="ab" * 32, id_key="cd" * 32, chunker_seed=1, cdc_min=1 << 10, cdc_avg=1 << 12,
    cdc_max=1 << 14,
)  # fmt: skip
SEED = {
    "id": "ef" * 32, "name": "gold-os", "kind": "os", "content": "files", "tree": "01" * 32,
    "time": "2026-01-01T00:00:00+00:00", "version": 1,
}  # fmt: skip


class _Answer:
    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.content = json.dumps(doc).encode()

    def json(self) -> Any:
        return self.doc


class _Server:
    """A server answering every request with `doc`."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc

    def request(self, *_args: Any, **_kw: Any) -> _Answer:
        return _Answer(self.doc)

    def get_json(self, *_args: Any, **_kw: Any) -> Any:
        return self.doc


def _store(doc: Any) -> RemoteStore:
    return RemoteStore(_Server(doc), INFO)  # type: ignore[arg-type]


def test_lacking_answers_only_among_the_ids_asked() -> None:
    asked = [secrets.token_bytes(32) for _ in range(3)]
    stranger = secrets.token_bytes(32)
    answer = {"missing": [asked[1].hex(), stranger.hex(), "zz"]}
    assert _store(answer).lacking(asked) == {asked[1]}


@pytest.mark.parametrize(
    "answer",
    [[], {"missing": "ab"}, {"missing": [1]}, {}, None, {"missing": None}],
)
def test_a_malformed_lacking_answer_is_one_remote_error(answer: Any) -> None:
    with pytest.raises(RemoteError):
        _store(answer).lacking([secrets.token_bytes(32)])


def test_a_seed_other_than_the_one_asked_for_is_refused() -> None:
    store = _store(SEED)
    assert server_seed(store, "gold-os").name == "gold-os"
    assert server_seed(store, "efefefef").name == "gold-os"  # an id prefix
    for ref in ("gold-app", "abababab"):
        with pytest.raises(RemoteError):
            server_seed(store, ref)
