"""Image backup and restore jobs run by `strongroom agent run --once` against a
real `strongroom server` (SQLite catalog), the agent with no repository
password: an operator's image backup job (spec `kind: image`) makes a block
point of the machine's file, its restore job writes it back byte for byte; a
machine's image schedule, once due, makes an incremental point (the first as
its parent, only the changed blocks read); `overwrite: refuse` fails the job
when the target holds something; hostile image specs are refused with 400;
a block point's dashboard page queues the restore of its disk to the agent."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from strongroom.catalog import Catalog
from strongroom.services.scheduler import Scheduler
from tests.conftest import CliRunner
from tests.helpers.cli import run_cli
from tests.helpers.listing import points_listing
from tests.helpers.tree import random_bytes
from tests.server.test_agents_protect import Served, served

MiB = 1 << 20


def _run_once(site: Served) -> tuple[int, list[dict[str, Any]], str]:
    done = run_cli(
        ["--json", "agent", "run", "--once", "--config", str(site.creds)], site.env, timeout=120
    )
    jobs = json.loads(done.out.splitlines()[-1])["jobs"] if done.out.strip() else []
    return done.rc, jobs, done.err


def _job(http: httpx.Client, kind: str, spec: dict[str, Any]) -> int:
    made = http.post("/api/v1/jobs", json={"kind": kind, "machine": "web1", "spec": spec})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_image_jobs_and_schedule_through_agent_run_once(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:  # data, a hole, data: 6 MiB
        f.write(random_bytes(2 * MiB, 1))
        f.seek(4 * MiB)
        f.write(random_bytes(2 * MiB, 2))
    with served(cli, cli_env, tmp_path) as site:
        http = site.http
        for bad in (
            {"kind": "image", "source": "relative.img"},
            {"kind": "image", "source": "/a/../etc/shadow"},
            {"kind": "image", "source": "/dev/vd\0a"},
            {"kind": "image", "source": "/" + "a" * 5000},
            {"kind": "image", "source": str(disk), "changed_since": "bitmap:x/../y"},
            {"kind": "image", "source": str(disk), "paths": ["/srv"]},
            {"kind": "image"},
            {"kind": "vmdk", "source": str(disk)},
        ):
            answer = http.post("/api/v1/jobs", json={"kind": "backup", "machine": "web1",
                                                     "spec": bad})  # fmt: skip
            assert answer.status_code == 400, (bad, answer.text)
            assert "\0" not in answer.text and "shadow" not in answer.text

        backup = _job(http, "backup", {"kind": "image", "source": str(disk), "tags": ["asked"]})
        rc, ran, err = _run_once(site)
        assert rc == 0 and [(r["id"], r["ok"]) for r in ran] == [(backup, True)], (ran, err)
        first = ran[0]["point"]
        done = http.get(f"/api/v1/jobs/{backup}").json()
        assert done["state"] == "done"
        assert done["outcome"].startswith(f"point {first}: image of {6 * MiB} bytes")
        got = points_listing(
            lambda: http.get("/api/v1/points").json(),
            lambda found: first in {p["id"] for p in found},
        )
        listed = {p["id"]: p for p in got}
        assert listed[first]["kind"] == "block" and listed[first]["host"] == "web1"
        assert listed[first]["tags"] == ["asked"]

        # an image point is restored whole: no paths
        target = tmp_path / "restored.img"
        picked = http.post("/api/v1/jobs", json={"kind": "restore", "machine": "web1", "spec": {
            "point": first, "target": str(target), "paths": ["/x"]}})  # fmt: skip
        assert picked.status_code == 400, picked.text
        # the point's dashboard page queues the restore of its disk to the agent
        assert 'id="restore-disk-to-agent"' in http.get(f"/points/{first}").text
        form = {"csrf_token": http.headers["X-CSRF-Token"], "target": str(target)}
        queued = http.post(f"/points/{first}/restore", data=form)
        assert queued.status_code == 303, queued.text
        (restore,) = [j["id"] for j in http.get("/api/v1/jobs").json() if j["kind"] == "restore"]
        spec = http.get(f"/api/v1/jobs/{restore}").json()["spec"]
        assert spec == {"point": first, "paths": [], "target": str(target),
                        "overwrite": "refuse", "kind": "image"}  # fmt: skip
        before = _sha(disk)

        # a schedule of image backups, once due, makes an incremental point
        with open(disk, "r+b") as f:
            f.seek(MiB)
            f.write(random_bytes(64 * 1024, 3))
        schedule = {"name": "web1-disk", "kind": "backup", "machine": "web1", "every": 3600,
                    "spec": {"kind": "image", "source": str(disk),
                             "changed_since": "compare"}}  # fmt: skip
        made = http.post("/api/v1/schedules", json=schedule)
        assert made.status_code == 201, made.text
        catalog = Catalog.open(str(tmp_path / "catalog.sqlite"))
        try:  # due now (as an hour later): whichever scheduler looks first fires it once
            current = catalog.get_schedule("web1-disk")
            due = datetime.now(UTC) - timedelta(seconds=1)
            catalog.update_schedule(dataclasses.replace(current, next_due=due))
            assert len(Scheduler(catalog).tick()) <= 1
        finally:
            catalog.close()
        rc, ran, err = _run_once(site)  # the restore and the scheduled backup
        assert rc == 0 and len(ran) == 2 and all(r["ok"] for r in ran), (ran, err)
        assert _sha(target) == before
        (scheduled,) = [r for r in ran if r["id"] != restore]
        second = scheduled["point"]
        shown = http.get(f"/api/v1/jobs/{scheduled['id']}").json()
        assert shown["schedule"] is not None and shown["machine"] == "web1"
        got = points_listing(
            lambda: http.get("/api/v1/points").json(),
            lambda found: second in {p["id"] for p in found},
        )
        points = {p["id"]: p for p in got}
        assert points[second]["parent"] == first
        summary = points[second]["summary"]
        assert summary["tracker"] == "compare" and summary["blocks_changed"] == 1, summary

        # refuse: the target holds the first disk; replace: it becomes the second
        refused = _job(http, "restore", {"point": second, "target": str(target),
                                         "overwrite": "refuse"})  # fmt: skip
        replaced = _job(http, "restore", {"point": second, "target": str(target),
                                          "overwrite": "replace"})  # fmt: skip
        rc, ran, _ = _run_once(site)
        assert rc == 1 and [(r["id"], r["ok"]) for r in ran] == [(refused, False), (replaced, True)]
        assert "not an empty file" in http.get(f"/api/v1/jobs/{refused}").json()["outcome"]
        assert _sha(target) == _sha(disk)
