"""VM backup and restore jobs run by an agent, in process (a real block
layer: a qemu-storage-daemon with two disks; the server's job, agent and
ops routes over a real repository and catalog; the agent's AgentRunner over
HTTP to them, its VM found in its own config file): a VM job for a machine in
no cluster, or a hostile one, is a 400; queued over the API, the agent makes
a VM point of the cluster that the job's finish accepts and its restore job
writes back byte-exact, as raw or qcow2 disks; a schedule of it fires once and makes an incremental
(only the changed blocks); a machine outside the cluster cannot finish a job
with that point."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from strongroom.remote.client import Client
from strongroom.remote.config import AgentConfig, RepositoryInfo
from strongroom.server import create_app
from strongroom.server.agent_api import agent_routes
from strongroom.server.agent_jobs_api import agent_jobs_routes
from strongroom.server.ops_api import add_ops_routes
from strongroom.services.accounts import Accounts
from strongroom.services.agent_intake import Intake
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.agent_runner import AgentRunner, JobResult
from strongroom.services.agents import Agents
from strongroom.services.dashboard import RepositoryView
from strongroom.services.operations import server_operations
from strongroom.services.scheduler import Scheduler
from tests.conftest import init_local_repository
from tests.helpers.cli import PASSWORD
from tests.helpers.images import KiB, MiB, to_raw
from tests.helpers.listing import points_listing
from tests.server.agent_fixtures import bearer
from tests.server.conftest import ADMIN_PASSWORD, sign_in
from tests.server.test_agents_resume import Router
from tests.vms.conftest import QEMU, VmDaemon, run_dir, write_config  # noqa: F401 (fixture)

pytestmark = QEMU

VM = "vm1"
SIZE = 4 * MiB


@pytest.fixture
def catalog_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLite only: the jobs' catalog part is tested on both in test_agent_jobs.py."""
    monkeypatch.delenv("STRONGROOM_CATALOG", raising=False)
    return str(tmp_path / "catalog.sqlite")


@dataclass
class VmJobSite:
    http: TestClient  # the administrator's session
    csrf: dict[str, str]
    accounts: Accounts
    router: Router
    daemon: VmDaemon

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer: httpx.Response = self.http.request(method, path, headers=self.csrf, **kwargs)
        return answer

    def enroll(self, machine: str, cluster: str | None = None) -> dict[str, Any]:
        token = self.api("POST", "/api/v1/enrollments", json={"machine": machine}).json()["token"]
        creds: dict[str, Any] = self.http.post("/api/v1/agent/enroll", json={"token": token}).json()
        if cluster is not None:
            put = self.api("PUT", f"/api/v1/machines/{machine}/cluster", json={"cluster": cluster})
            assert put.status_code == 200, put.text
        return creds

    def runner(self, machine: str, creds: dict[str, Any]) -> AgentRunner:
        config = AgentConfig(["http://a"], machine, creds["agent_id"], creds["secret"],
                             RepositoryInfo.from_doc(creds["repository"]))  # fmt: skip
        client = Client(config.servers, config.bearer, http=httpx.Client(transport=self.router))
        return AgentRunner(config, client)

    def run_once(self, runner: AgentRunner) -> list[JobResult]:
        try:
            return runner.run_once()
        finally:
            runner.client.close()

    def job(self, kind: str, machine: str, spec: dict[str, Any]) -> httpx.Response:
        return self.api("POST", "/api/v1/jobs", json={"kind": kind, "machine": machine,
                                                       "spec": spec})  # fmt: skip


@pytest.fixture
def vsite(
    accounts: Accounts,
    tmp_path: Path,
    run_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[VmJobSite]:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    intake = Intake(str(repo_path), PASSWORD.encode())
    view = RepositoryView(str(repo_path), PASSWORD.encode(), ttl=0)
    agents = Agents(accounts.catalog)
    agent_jobs = AgentJobs.over(accounts.catalog, view)
    ops, _loops = server_operations(
        accounts.catalog, str(repo_path), PASSWORD.encode(), agent_specs=agent_jobs.check_spec
    )
    routers = [
        functools.partial(add_ops_routes, ops=ops),
        agent_routes(agents, intake),
        agent_jobs_routes(agents, agent_jobs),
    ]
    daemon = VmDaemon(tmp_path / "shared", run_dir / "qsd").create(SIZE, fill=0x11).start()
    # the agent's own config file says where the VM's block layer is
    config = write_config(tmp_path / "agent.toml", {VM: {
        "qmp": daemon.qmp, "nbd": daemon.nbd, "disks": list(daemon.disks),
        "scratch": str(tmp_path / "scr")}})  # fmt: skip
    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    try:
        listed = lambda: [{"id": p.id, **p.to_doc()} for p in view.points()]  # noqa: E731
        with TestClient(create_app(accounts, listed, routers=routers)) as http:
            csrf = {"X-CSRF-Token": sign_in(http, "admin", ADMIN_PASSWORD)}
            yield VmJobSite(http, csrf, accounts, Router({"a": http}), daemon)
    finally:
        daemon.stop()
        intake.close()


def test_vm_jobs_and_schedule_run_by_the_agent(vsite: VmJobSite, tmp_path: Path) -> None:
    loner = vsite.enroll("node-c")  # in no cluster
    refused = vsite.job("backup", "node-c", {"kind": "vm", "vm": VM})
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("backup: the machine is in no VM cluster")
    creds = vsite.enroll("node-a", cluster="prod")
    for bad in (
        {"kind": "vm"},
        {"kind": "vm", "vm": "../etc"},
        {"kind": "vm", "vm": "vm\0x"},
        {"kind": "vm", "vm": VM, "changed_since": "bitmap:mine"},
        {"kind": "vm", "vm": VM, "source": "/dev/vda"},
        {"kind": "vm", "vm": VM, "tags": ["t"] * 33},
    ):
        answer = vsite.job("backup", "node-a", bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert "\0" not in answer.text and "etc" not in answer.text

    asked = vsite.job("backup", "node-a", {"kind": "vm", "vm": VM, "tags": ["asked"]})
    assert asked.status_code == 201, asked.text
    (done,) = vsite.run_once(vsite.runner("node-a", creds))
    assert done.ok and done.id == asked.json()["id"], done
    first = done.point
    shown = vsite.api("GET", f"/api/v1/jobs/{done.id}").json()
    assert shown["state"] == "done"
    assert shown["outcome"].startswith(f"point {first}: VM {VM}: 2 disks, {2 * SIZE} bytes: ")
    got = points_listing(
        lambda: vsite.api("GET", "/api/v1/points").json(),
        lambda found: first in {p["id"] for p in found},
    )
    points = {p["id"]: p for p in got}
    assert points[first]["kind"] == "vm" and points[first]["host"] == "prod"
    assert points[first]["tags"] == ["asked"]

    # its restore job: every disk into the folder as DISK.raw, byte for byte
    target = tmp_path / "restored"
    restore = vsite.job("restore", "node-a", {"point": first, "target": str(target)})
    assert restore.status_code == 201, restore.text
    assert restore.json()["spec"]["kind"] == "vm"
    assert vsite.job("restore", "node-a", {"point": first, "target": str(target),
                                           "paths": ["/x"]}).status_code == 400  # fmt: skip
    outside = vsite.job("restore", "node-c", {"point": first, "target": str(target)})
    assert outside.json() == {"error": "restore: no such point of that machine"}
    (restored,) = vsite.run_once(vsite.runner("node-a", creds))
    assert restored.ok and restored.outcome.startswith("restored 2 disks"), restored
    for disk in vsite.daemon.disks:
        assert vsite.daemon.difference(disk, target / f"{disk}.raw") is None
    # and as qcow2 disks (`format: qcow2`), as `restore --format qcow2` writes them
    qcow2 = tmp_path / "restored-qcow2"
    spec = {"point": first, "target": str(qcow2), "format": "qcow2"}
    assert vsite.job("restore", "node-a", spec).status_code == 201
    (restored,) = vsite.run_once(vsite.runner("node-a", creds))
    assert restored.ok and restored.outcome.endswith("(DISK.qcow2)"), restored
    for disk in vsite.daemon.disks:
        raw = to_raw(qcow2 / f"{disk}.qcow2", tmp_path / f"{disk}-from-qcow2.raw")
        assert vsite.daemon.difference(disk, raw) is None

    # a schedule of it, once due, fires once and makes an incremental
    vsite.daemon.write("disk1", "write -P 0x44 0 4k", f"write -P 0x45 {2 * MiB} {64 * KiB}")
    schedule = {"name": "vm1-hourly", "kind": "backup", "machine": "node-a", "every": 3600,
                "spec": {"kind": "vm", "vm": VM}}  # fmt: skip
    made = vsite.api("POST", "/api/v1/schedules", json=schedule)
    assert made.status_code == 201, made.text
    catalog = vsite.accounts.catalog
    current = catalog.get_schedule("vm1-hourly")
    due = datetime.now(UTC) - timedelta(seconds=1)
    catalog.update_schedule(dataclasses.replace(current, next_due=due))
    assert len(Scheduler(catalog).tick()) == 1
    assert Scheduler(catalog).tick() == []  # once
    (scheduled,) = vsite.run_once(vsite.runner("node-a", creds))
    assert scheduled.ok, scheduled
    assert vsite.api("GET", f"/api/v1/jobs/{scheduled.id}").json()["schedule"] is not None
    got = points_listing(
        lambda: vsite.api("GET", "/api/v1/points").json(),
        lambda found: scheduled.point in {p["id"] for p in found},
    )
    points = {p["id"]: p for p in got}
    second = points[scheduled.point]
    assert second["parent"] == first and second["host"] == "prod"
    summary = second["summary"]
    assert summary["tracker"] == "bitmap", summary  # only the changed blocks were read
    assert [d["blocks_changed"] for d in summary["disks"]] == [0, 2], summary
    assert summary["bytes_read"] == summary["bytes_changed"] == 2 * MiB  # 1 MiB blocks

    # a machine outside the cluster cannot claim that point for its own job
    files = vsite.job("backup", "node-c", {"paths": ["/srv"]}).json()["id"]
    agent = vsite.http
    agent.cookies.clear()
    claimed = agent.post("/api/v1/agent/jobs/claim", json={"wait": 0}, headers=bearer(loner))
    assert claimed.json()["id"] == files
    forged = agent.post(f"/api/v1/agent/jobs/{files}/finish", headers=bearer(loner),
                        json={"ok": True, "outcome": "", "point": first})  # fmt: skip
    assert forged.status_code == 400
    assert forged.json() == {"error": "finish: no such point of this machine"}
