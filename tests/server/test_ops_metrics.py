"""`/metrics` over a real catalog and a real repository (points made with
the CLI): the text parses with prometheus_client's parser and each
documented series has the right value."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from strongroom.server import create_app
from strongroom.server.metrics import add_metrics_routes
from strongroom.services.accounts import Accounts
from strongroom.services.jobs import Jobs
from strongroom.services.metrics import Metrics
from tests.conftest import PASSWORD, CliRunner


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_metrics_report_jobs_sources_lag_and_answers(
    accounts: Accounts, cli: CliRunner, tmp_path: Path, repo_path: Path
) -> None:
    assert cli("init").rc == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 5000)
    assert cli("backup", str(src)).rc == 0
    (src / "b.bin").write_bytes(b"y" * 3000)
    assert cli("backup", str(src)).rc == 0
    newest = datetime.fromisoformat(cli("snapshots", "--json").json()[-1]["time"])
    jobs = Jobs(accounts.catalog, handlers={"prune": lambda job, progress: "ok"})
    jobs.enqueue("prune")
    jobs.enqueue("forget")
    jobs.enqueue("backup", machine="web1")
    jobs.run_one("w")
    now = datetime.now(UTC)
    metrics = Metrics(accounts.catalog, str(repo_path), PASSWORD.encode(), clock=lambda: now)
    app = create_app(
        accounts, list, routers=[partial(add_metrics_routes, snapshot=metrics.snapshot)]
    )
    with TestClient(app) as client:
        assert client.get("/api/v1/me").status_code == 401
        answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    got = _samples(answer.text)
    assert got[("strongroom_jobs", (("kind", "prune"), ("state", "done")))] == 1
    assert got[("strongroom_jobs", (("kind", "forget"), ("state", "queued")))] == 1
    assert got[("strongroom_jobs", (("kind", "backup"), ("state", "queued")))] == 1
    (source,) = {dict(k[1])["source"] for k in got if k[0] == "strongroom_source_points"}
    assert source.endswith(f"paths={src}")
    label = (("source", source),)
    assert got[("strongroom_source_points", label)] == 2
    assert got[("strongroom_source_bytes", label)] == 8000
    assert got[("strongroom_source_last_point_timestamp_seconds", label)] == pytest.approx(
        newest.timestamp()
    )
    assert got[("strongroom_source_lag_seconds", label)] == pytest.approx(
        (now - newest).total_seconds()
    )
    assert got[("strongroom_up", (("part", "catalog"),))] == 1
    assert got[("strongroom_up", (("part", "repository"),))] == 1
    assert got[("strongroom_http_requests_total", (("code", "401"), ("method", "GET")))] == 1
    schema = client.get("/api/v1/openapi.json").json()
    assert "/metrics" not in schema["paths"]


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_repository_that_cannot_be_read_is_down_not_an_error(
    accounts: Accounts, tmp_path: Path
) -> None:
    metrics = Metrics(accounts.catalog, str(tmp_path / "nothing"), b"pw")
    app = create_app(
        accounts, list, routers=[partial(add_metrics_routes, snapshot=metrics.snapshot)]
    )
    with TestClient(app) as client:
        got = _samples(client.get("/metrics").text)
    assert got[("strongroom_up", (("part", "repository"),))] == 0
    assert got[("strongroom_up", (("part", "catalog"),))] == 1
