"""`strongroom protect --policy NAME --server URL`: the protection service as
an enrolled agent of a real `strongroom server` (no repository password in
the agent's environment). A writer runs during three tree cycles; every
point, restored through the server, holds exactly the journal's instant;
`status --server` shows the lag from the machine's points; the source's
retention is registered with the server as a forget schedule of the
machine's points, which the server's forget job (not the agent) applies;
the agent's credentials cannot forget. A protected volume's cycles go
through the server too (the second from its dirty bitmap) and restore."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from strongroom.services.agent_retention import schedule_name
from strongroom.services.volumes import attach_volume, create_volume
from strongroom.sources.volume_state import volumes_dir
from tests.conftest import CliRunner
from tests.helpers.cli import run_cli
from tests.helpers.volumes import MiB, Writer, check_writes, clean_everything, needs_volumes
from tests.protect.test_service import CYCLE, pytestmark, tree, write_policy  # noqa: F401
from tests.server.test_server_process import _free_port, _start, _stop, _wait_up, admin_client


def _agent(env: dict[str, str], *args: str, timeout: float = 120) -> list[dict[str, Any]]:
    done = run_cli(["--json", *args], env, timeout=timeout)
    assert done.rc == 0, done.err
    try:
        return [json.loads(done.out)]  # one document (maybe over several lines)
    except json.JSONDecodeError:
        return [json.loads(line) for line in done.out.splitlines() if line.strip()]


def _wait_job(http: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
        if doc["state"] not in ("queued", "running"):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")


@dataclass
class Served:
    http: httpx.Client  # the administrator's session
    base: str
    env: dict[str, str]  # the agent's: no repository password
    creds: str  # the agent's config

    def agent(self, *args: str) -> list[dict[str, Any]]:
        return _agent(self.env, *args, "--server", self.base, "--agent-config", self.creds)


@contextmanager
def served(cli: CliRunner, cli_env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """A real server process over a new repository, machine `web1` enrolled."""
    assert cli("init").rc == 0
    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = _start(env, port, log)
    try:
        _wait_up(server, base, log)
        http = admin_client(base, log)
        token = http.post("/api/v1/enrollments", json={"machine": "web1"}).json()["token"]
        agent_env = {k: v for k, v in cli_env.items()
                     if k not in ("STRONGROOM_PASSWORD", "STRONGROOM_REPO")}  # fmt: skip
        agent_env |= {"STRONGROOM_CONFIG": str(tmp_path / "agent.toml"),
                      "STRONGROOM_TEST_MIN_CYCLE": "1"}  # fmt: skip
        creds = str(tmp_path / "agent" / "agent.json")
        _agent(agent_env, "agent", "enroll", "--server", base, "--token", token,
               "--config", creds)  # fmt: skip
        yield Served(http, base, agent_env, creds)
    finally:
        _stop(server)


def test_protect_through_a_server_points_exact_retention_by_the_servers_forget(
    cli: CliRunner,
    cli_env: dict[str, str],
    tree: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    with served(cli, cli_env, tmp_path) as site:
        http, base, agent_env, creds = site.http, site.base, site.env, site.creds
        write_policy(agent_env, "t", f'sources = ["{tree}"]\ncycle = "{CYCLE}s"\n'
                     'freeze_timeout = "5s"\nretention = { keep_last = 1 }')  # fmt: skip

        writer = Writer(tree, pause=0.01).start()
        try:
            done = _agent(agent_env, "protect", "--policy", "t", "--cycles", "3",
                          "--server", base, "--agent-config", creds)  # fmt: skip
        finally:
            writer.stop()
        assert not writer.error
        assert [o["error"] for o in done] == [""] * 3, done
        assert done[0]["full"] and not any(o["full"] for o in done[1:]), done
        assert all(o["forgotten"] == [] for o in done)  # the agent forgets nothing
        (doc,) = _agent(agent_env, "status", "--server", base, "--agent-config", creds)
        (source,) = doc["sources"]
        assert source["last_point"]["id"] == done[-1]["point"] and source["points"] == 3
        assert source["lag_seconds"] < 2 * CYCLE and source["tracker_in_sync"], source

        own = _agent(agent_env, "snapshots", "--server", base, "--agent-config", creds)[-1]
        ids = [p["id"] for p in (own if isinstance(own, list) else own["points"])]
        assert ids[-3:] == [o["point"] for o in done] and len(ids) == 3
        for o in done:
            target = tmp_path / f"r-{o['point'][:8]}"
            _agent(agent_env, "restore", o["point"], "--target", str(target),
                   "--server", base, "--agent-config", creds)  # fmt: skip
            (root,) = [p for p in target.rglob("data") if p.is_dir()]
            point = next(p for p in (own if isinstance(own, list) else own["points"])
                         if p["id"] == o["point"])  # fmt: skip
            record = point["summary"]["protect"]
            after = record["thawed_at"] if not o["full"] else time.time()
            check_writes(root, writer.log, record["frozen_at"], after)

        # The retention is the server's: a forget schedule of this machine's tree.
        schedule = http.get(f"/api/v1/schedules/{schedule_name('web1', 't')}").json()
        assert schedule["kind"] == "forget" and schedule["machine"] is None
        spec = schedule["spec"]
        assert spec["hosts"] == ["web1"] and spec["paths"] == [str(tree)]
        assert spec["keep_last"] == 1 and spec["tags"] == ["protect"]
        agent_http = httpx.Client(base_url=base, headers=_bearer(creds))
        assert agent_http.post("/api/v1/jobs", json={"kind": "forget", "spec": spec}
                               ).status_code in (401, 403)  # fmt: skip
        queued = http.post("/api/v1/jobs", json={"kind": "forget", "spec": spec})
        assert queued.status_code == 201, queued.text
        assert _wait_job(http, queued.json()["id"])["state"] == "done"
        left = _agent(agent_env, "snapshots", "--server", base, "--agent-config", creds)[-1]
        kept = [p["id"] for p in (left if isinstance(left, list) else left["points"])]
        assert kept == [done[-1]["point"]]


@needs_volumes
def test_a_protected_volume_through_a_server_bitmap_incrementals_restore(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    image, mount = tmp_path / "vol.qcow2", tmp_path / "vmnt"
    mount.mkdir()
    try:
        create_volume(str(image), 32 * MiB)
        attach_volume(str(image), str(mount))
        with served(cli, cli_env, tmp_path) as site:
            write_policy(site.env, "v", f'sources = ["{image}"]\ncycle = "{CYCLE}s"\n'
                         "retention = { keep_last = 5 }")  # fmt: skip
            (mount / "a.bin").write_bytes(os.urandom(300_000))
            done = site.agent("protect", "--policy", "v", "--cycles", "2")
            assert [o["error"] for o in done] == [""] * 2, done
            assert done[1]["full"] is False, done  # the second cycle read the bitmap only
            spec = site.http.get(f"/api/v1/schedules/{schedule_name('web1', 'v')}").json()["spec"]
            assert spec["paths"] == [f"volume:{os.path.realpath(image)}"]
            raw = tmp_path / "r.raw"
            site.agent("restore", done[-1]["point"], "--target", str(raw))
            got = tmp_path / "a.out"
            subprocess.run(["debugfs", "-R", f"dump /a.bin {got}", str(raw)],
                           capture_output=True, check=True)  # fmt: skip
            assert got.read_bytes() == (mount / "a.bin").read_bytes()
    finally:
        clean_everything(volumes_dir(), [mount])


def _bearer(path: str) -> dict[str, str]:
    with open(path) as f:
        doc = json.load(f)
    return {"Authorization": f"Bearer {doc['agent_id']}.{doc['secret']}"}
