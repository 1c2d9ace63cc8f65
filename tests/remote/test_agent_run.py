"""`strongroom agent run --once` for real: a `strongroom server` process
(SQLite catalog) and the agent enrolled through the API, with no repository
password in its environment. An operator's backup job runs on the agent
and its point is listed with the job's outcome; a job that fails on the
agent (a path that does not exist) is failed with an alert; a restore job
writes the point's files to a folder of the machine, equal to the source;
a machine's schedule, once due, runs at the next `agent run --once`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from strongroom.catalog import Catalog
from strongroom.services.scheduler import Scheduler
from tests.conftest import CliRunner
from tests.helpers.cli import strongroom_command
from tests.helpers.compare import walk_differences
from tests.server.test_server_process import _free_port, _start, _stop, _wait_up, admin_client


def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("STRONGROOM_PASSWORD", "STRONGROOM_REPO")
    }
    return subprocess.run(
        [*strongroom_command(), *args], env=env, capture_output=True, text=True, timeout=120
    )


def _run_once() -> tuple[int, list[dict[str, Any]], str]:
    done = _agent("--json", "agent", "run", "--once")
    jobs = json.loads(done.stdout.splitlines()[-1])["jobs"] if done.stdout.strip() else []
    return done.returncode, jobs, done.stderr


def test_agent_run_once_runs_backup_restore_failing_and_scheduled_jobs(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("init").rc == 0
    catalog_path = tmp_path / "catalog.sqlite"
    env = {**cli_env, "STRONGROOM_CATALOG": str(catalog_path)}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _start(env, port, log)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "big.bin").write_bytes(os.urandom(1 << 20))
    (src / "small.txt").write_text("hello agent jobs\n" * 20)
    os.symlink("small.txt", src / "link")
    try:
        _wait_up(proc, base, log)
        http = admin_client(base, log, timeout=30)
        token = http.post("/api/v1/enrollments", json={"machine": "laptop"}).json()["token"]
        enrolled = _agent("agent", "enroll", "--server", base, "--token", token)
        assert enrolled.returncode == 0, enrolled.stderr

        def job(kind: str, spec: dict[str, Any]) -> int:
            made = http.post("/api/v1/jobs", json={"kind": kind, "machine": "laptop", "spec": spec})
            assert made.status_code == 201, made.text
            return int(made.json()["id"])

        backup = job("backup", {"paths": [str(src)], "tags": ["asked"]})
        missing = job("backup", {"paths": [str(tmp_path / "no-such-folder")]})
        rc, ran, err = _run_once()
        assert rc == 1, err  # one job failed
        assert [(r["id"], r["ok"]) for r in ran] == [(backup, True), (missing, False)]
        done = http.get(f"/api/v1/jobs/{backup}").json()
        point = ran[0]["point"]
        assert done["state"] == "done" and done["outcome"].startswith(f"point {point}: 2 files")
        assert done["progress"] is None or done["progress"]["files"] >= 0
        listed = {p["id"]: p for p in http.get("/api/v1/points").json()}
        assert listed[point]["host"] == "laptop" and listed[point]["tags"] == ["asked"]
        failed = http.get(f"/api/v1/jobs/{missing}").json()
        assert failed["state"] == "failed" and "no-such-folder" in failed["outcome"]
        alerts = http.get("/api/v1/events", params={"kind": "job.failed"}).json()
        assert [a["data"] for a in alerts] == [{"job": missing, "kind": "backup",
                                                "machine": "laptop"}]  # fmt: skip

        target = tmp_path / "restored"
        restore = job("restore", {"point": point, "target": str(target), "overwrite": "refuse"})
        rc, ran, err = _run_once()
        assert rc == 0 and [(r["id"], r["ok"]) for r in ran] == [(restore, True)], err
        assert http.get(f"/api/v1/jobs/{restore}").json()["outcome"].startswith("restored 2 files")
        assert walk_differences(src, target / str(src).lstrip("/"), check_root=False,
                                check_atime=False) == []  # fmt: skip
        again = job("restore", {"point": point, "target": str(target), "overwrite": "refuse"})
        rc, ran, _ = _run_once()
        assert rc == 1 and "not empty" in http.get(f"/api/v1/jobs/{again}").json()["outcome"]

        schedule = {"name": "laptop-hourly", "kind": "backup", "machine": "laptop",
                    "spec": {"paths": [str(src)]}, "every": 3600}  # fmt: skip
        assert http.post("/api/v1/schedules", json=schedule).status_code == 201
        catalog = Catalog.open(str(catalog_path))
        try:  # the schedule comes due (as an hour later); this process's scheduler fires it
            due = datetime.now(UTC) - timedelta(seconds=1)
            current = catalog.get_schedule("laptop-hourly")
            catalog.update_schedule(dataclasses.replace(current, next_due=due))
            fired = Scheduler(catalog).tick()
        finally:
            catalog.close()
        assert len(fired) <= 1  # or the server's own scheduler was first: one job either way
        rc, ran, err = _run_once()
        assert rc == 0 and len(ran) == 1 and ran[0]["ok"], err
        shown = http.get(f"/api/v1/jobs/{ran[0]['id']}").json()
        assert shown["schedule"] is not None and shown["machine"] == "laptop"
        assert len(http.get("/api/v1/points").json()) == 2
    finally:
        assert _stop(proc) == 0, log.read_text()
