"""`backup --vm NAME --dry-run` through the server (a real block layer: the
qemu-storage-daemon with two disks of tests/server/test_agents_vms.py): the
disks are read and compared with the cluster's parent point, the server is
asked which chunks it lacks, nothing is sent and no point made; no bitmap is
started or retired and no view is left, so the next real incremental still
reads the bitmap; the CLI prints the summary with `"point_id": null`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click.testing
import httpx
import pytest

from strongroom.cli.main import cli
from strongroom.remote.client import Client
from strongroom.remote.config import AgentConfig, RepositoryInfo
from strongroom.services import agent_backup
from strongroom.services.agent_backup import agent_points
from strongroom.services.agent_dry_runs import dry_run_vm_through_server
from tests.server.agent_fixtures import site  # noqa: F401 (fixture)
from tests.server.test_agents_resume import pair  # noqa: F401 (fixture)
from tests.server.test_agents_vms import BS, CHANGES, VM, Nodes, catalog_url, nodes  # noqa: F401
from tests.vms.conftest import QEMU, run_dir, write_config  # noqa: F401 (fixture)

pytestmark = QEMU


def _dry_run(cluster: Nodes, node: str) -> tuple[Any, Any]:
    store = cluster.store(node)
    try:
        return dry_run_vm_through_server(store, cluster.spec, block_size=BS), store.traffic
    finally:
        store.close()


def _untouched(cluster: Nodes, bitmaps: int) -> None:
    assert cluster.daemon.leftovers() == []  # views torn down
    assert all(len(cluster.daemon.our_bitmaps(d)) == bitmaps for d in cluster.daemon.disks)


def test_vm_dry_run_through_the_server_sends_nothing_and_keeps_the_lineage(
    nodes: Nodes,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # first: every block has the fill's content, one chunk for both disks
    dry, traffic = _dry_run(nodes, "node-a")
    assert (dry.parent, dry.host, dry.blocks_new, dry.data_added) == (None, "prod", 1, BS)
    assert traffic.bundles == 0 and traffic.bytes_sent == 0 and traffic.asked >= 1
    assert agent_points(nodes.store("node-a")) == []
    _untouched(nodes, 0)
    first, _ = nodes.backup("node-a")

    # incremental: four blocks of new content, compared with node-a's point
    for disk, extents in CHANGES.items():
        nodes.daemon.write(disk, *(f"write -P {p} {o} {n}" for o, n, p in extents))
    dry, traffic = _dry_run(nodes, "node-b")
    assert dry.parent == first.point.id and (dry.blocks_new, dry.data_added) == (4, 4 * BS)
    assert [(d["tracker"], d["blocks_changed"]) for d in dry.disks] == [("compare", 2)] * 2
    assert traffic.bytes_sent == 0
    _untouched(nodes, 1)
    second, _ = nodes.backup("node-b")  # the bitmap lineage is intact
    assert [d["tracker"] for d in second.disks] == ["bitmap", "bitmap"]
    assert [d["blocks_changed"] for d in second.disks] == [2, 2]

    # the CLI (in process, its HTTP to the in-process servers)
    config = write_config(tmp_path / "vms.toml", {VM: {
        "qmp": nodes.spec.qmp, "nbd": nodes.spec.nbd, "disks": nodes.spec.disks,
        "scratch": str(tmp_path / "scr")}})  # fmt: skip
    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    monkeypatch.delenv("STRONGROOM_REPO", raising=False)

    def client(urls: list[str], bearer_text: str, *, ca_cert: str | None = None) -> Client:
        return Client(urls, bearer_text, http=httpx.Client(transport=nodes.router))

    monkeypatch.setattr(agent_backup, "Client", client)
    creds = nodes.creds["node-a"]
    path = str(tmp_path / "node-a.json")
    AgentConfig(["http://a", "http://b"], "node-a", creds["agent_id"], creds["secret"],
                RepositoryInfo.from_doc(creds["repository"])).save(path)  # fmt: skip
    nodes.daemon.write("disk1", "write -P 0x44 0 4k")
    done = click.testing.CliRunner().invoke(
        cli, ["--json", "backup", "--vm", VM, "--dry-run", "--agent-config", path]
    )
    assert done.exit_code == 0, (done.output, done.exception)
    doc: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert (doc["point_id"], doc["dry_run"], doc["parent"]) == (None, True, second.point.id)
    assert (doc["blocks_new"], doc["data_added"], doc["traffic"]["bytes_sent"]) == (1, BS, 0)
    _untouched(nodes, 1)
