"""Review of the agents' seed endpoints (server/agent_api.py,
services/agent_seeds.py) in process: whatever `ref` an agent sends, the
answer is a seed or 404, never a point (another machine's, by id or prefix,
or its own), and hostile refs (traversal, NUL, very long, unicode) are one
404 without a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.tree import write_file
from tests.server.agent_fixtures import Site, bearer, site

__all__ = ["site"]


@pytest.fixture
def catalog_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLite only: the endpoints read the repository, not the catalog."""
    monkeypatch.delenv("STRONGROOM_CATALOG", raising=False)
    return str(tmp_path / "catalog.sqlite")


def test_the_seed_endpoints_answer_seeds_and_nothing_else(site: Site, tmp_path: Path) -> None:
    env = dict(os.environ, STRONGROOM_REPO=str(site.repo_path))
    write_file(tmp_path / "gold" / "etc" / "os-release", b"ID=gold\n")
    write_file(tmp_path / "theirs" / "secret.txt", b"another machine's\n")
    assert run_cli(["seed", "add", "gold", str(tmp_path / "gold"), "--kind", "os"], env).rc == 0
    made = run_cli(["--json", "backup", "--host", "other", str(tmp_path / "theirs")], env)
    assert made.rc == 0, made.err
    point = json.loads(made.out.splitlines()[-1])["point_id"]
    c = site.client
    auth = bearer(site.enroll("web1"))
    listed = c.get("/api/v1/agent/seeds", headers=auth).json()
    assert [s["name"] for s in listed] == ["gold"]
    assert point not in json.dumps(listed)
    hostile = [
        point, point[:8], point[:12], point.upper(), "..", "../points", "..%2fpoints",
        "gold\x00", "gold/../gold", "x" * 10_000, "\u202egold", "%", " gold", "gold ",
        listed[0]["id"][:7],  # a prefix shorter than 8 hex digits names nothing
    ]  # fmt: skip
    for ref in hostile:
        answer = c.get(f"/api/v1/agent/seeds/{quote(ref, safe='')}", headers=auth)
        assert answer.status_code == 404, (ref[:20], answer.status_code)
        assert answer.json().keys() == {"error"}  # no document: the ref echoed at most
        assert '"host"' not in answer.text and "other" not in answer.text
        assert "Traceback" not in answer.text and len(answer.text) < 400
    found = c.get(f"/api/v1/agent/seeds/{listed[0]['id'][:8]}", headers=auth)
    assert found.status_code == 200 and found.json() == listed[0]
    for method in ("post", "put", "delete", "patch"):
        answer = getattr(c, method)("/api/v1/agent/seeds/gold", headers=auth)
        assert answer.status_code == 405, method
    assert c.get("/api/v1/agent/seeds/gold").status_code == 401
