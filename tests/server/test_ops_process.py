"""`strongroom server` for real runs the server's jobs: a prune job queued
over HTTP is claimed and run by the server process's job runner, and
/metrics answers."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import CliRunner
from tests.server.test_server_process import _free_port, _start, _stop, _wait_up


def _job_state(http: httpx.Client, job_id: int, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        state = str(http.get(f"/api/v1/jobs/{job_id}").json()["state"])
        if state in ("done", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def test_the_server_process_runs_a_prune_job_and_serves_metrics(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("init").rc == 0
    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _start(env, port, log)
    try:
        _wait_up(proc, base, log)
        line = next(ln for ln in log.read_text().splitlines() if "shown only now" in ln)
        password = line.rsplit(" ", 1)[1]
        with httpx.Client(base_url=base) as http:
            signed = http.post("/api/v1/session", json={"name": "admin", "password": password})
            csrf = {"X-CSRF-Token": signed.json()["csrf_token"]}
            job = http.post("/api/v1/jobs", json={"kind": "prune"}, headers=csrf).json()
            assert _job_state(http, job["id"], 30) == "done"
            shown = http.get(f"/api/v1/jobs/{job['id']}").json()
            assert shown["outcome"].startswith("pruned: deleted 0 pack(s)")
            assert shown["claimed_by"].split(":")[1] == str(proc.pid)
            metrics = http.get("/metrics").text
            assert 'strongroom_jobs{kind="prune",state="done"} 1.0' in metrics
            assert 'strongroom_up{part="repository"} 1.0' in metrics
    finally:
        assert _stop(proc) == 0, log.read_text()
