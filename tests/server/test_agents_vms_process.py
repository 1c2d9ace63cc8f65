"""`strongroom backup --vm NAME --server URL` and `restore --server` of the
VM point with the real CLI as two nodes of one cluster against a real
`strongroom server` (no repository password in the agents' environment):
node A's first point, node B's incremental on it, restored and compared
with the disks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from strongroom.services.agent_backup import enroll
from tests.conftest import CliRunner
from tests.helpers.images import MiB
from tests.server.test_agents_images_process import _agent
from tests.server.test_server_process import _free_port, _start, _stop, _wait_up
from tests.vms.conftest import QEMU, VmDaemon, run_dir, write_config  # noqa: F401 (fixture)

pytestmark = QEMU


def test_two_nodes_back_a_vm_up_through_a_real_server(
    cli: CliRunner,
    cli_env: dict[str, str],
    tmp_path: Path,
    run_dir: Path,  # noqa: F811
) -> None:
    assert cli("init").rc == 0
    daemon = VmDaemon(tmp_path / "shared", run_dir / "qsd").create(4 * MiB, fill=0x11).start()
    config = write_config(tmp_path / "vms.toml", {"vm1": {
        "qmp": daemon.qmp, "nbd": daemon.nbd, "disks": daemon.disks,
        "scratch": str(tmp_path / "scratch")}})  # fmt: skip
    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = _start(env, port, log)
    try:
        _wait_up(server, base, log)
        line = next(ln for ln in log.read_text().splitlines() if "shown only now" in ln)
        http = httpx.Client(base_url=base)
        signed = http.post("/api/v1/session", json={"name": "admin", "password": line.split()[-1]})
        http.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
        agents = {}
        for node in ("node-a", "node-b"):
            token = http.post("/api/v1/enrollments", json={"machine": node}).json()["token"]
            agent_env = {k: v for k, v in os.environ.items()
                         if k not in ("STRONGROOM_PASSWORD", "STRONGROOM_REPO")}  # fmt: skip
            agent_env["STRONGROOM_CONFIG"] = str(config)
            agent_env["XDG_CONFIG_HOME"] = str(tmp_path / node)
            enroll([base], token, None, str(tmp_path / node / "strongroom" / "agent.json"))
            agents[node] = agent_env
            put = http.put(f"/api/v1/machines/{node}/cluster", json={"cluster": "prod"})
            assert put.status_code == 200, put.text

        first = _agent(agents["node-a"], "backup", "--vm", "vm1", "--server", base)
        assert first["host"] == "prod"
        daemon.write("disk0", "write -P 0x22 1M 64k")
        daemon.write("disk1", "write -P 0x33 2M 4k")
        second = _agent(agents["node-b"], "backup", "--vm", "vm1", "--server", base)
        assert second["parent"] == first["point_id"] and second["host"] == "prod"
        disks: Any = second["disks"]
        traffic: Any = second["traffic"]
        assert [d["blocks_changed"] for d in disks] == [1, 1]
        # the 2 changed blocks, a map segment and root per disk, the manifest
        assert traffic["missing"] == 2 + 2 * 2 + 1
        assert "7 missing" in str(second["stderr"])

        out = tmp_path / "restored"
        _agent(agents["node-a"], "restore", str(second["point_id"])[:12], "--target", str(out),
               "--server", base)  # fmt: skip
        for disk in daemon.disks:
            assert daemon.difference(disk, out / f"{disk}.raw") is None

    finally:
        _stop(server)
        daemon.stop()
