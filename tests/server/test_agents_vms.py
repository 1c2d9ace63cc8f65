"""VM points through the server, in process (a real block layer: a
qemu-storage-daemon with two disks; two server apps over one repository and
catalog): node A of cluster `prod` takes the first point, node B the next
incremental with A's point as parent (only changed blocks sent), restored
byte-exact; node C, outside the cluster, neither sees the points nor takes
the lease; a lease held by A makes B busy, a dead A's lease expires and its
views' names pass to B; a VM commit whose disk map is not stored, of
another VM, host or parent, or from a machine in no cluster, is refused;
`backup --vm --agent-config` and `restore` of the VM point through the CLI
(in process: the real server's wiring is schemathesis's, test_schemathesis_all)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click.testing
import httpx
import pytest
from fastapi.testclient import TestClient

from strongroom.cli.main import cli
from strongroom.config import VmSpec
from strongroom.errors import PointNotFound, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.vm import VmDisk, VmManifest
from strongroom.pipeline.blockmaps import save_vm_manifest
from strongroom.remote.client import Client
from strongroom.remote.config import AgentConfig, RepositoryInfo
from strongroom.remote.store import RemoteStore
from strongroom.repository.leases import LeaseBusy, LeaseRecord
from strongroom.services import agent_backup
from strongroom.services.agent_backup import agent_points
from strongroom.services.agent_images import export_image_through_server, restore_own_point
from strongroom.services.agent_vm_leases import cluster_lease_key
from strongroom.services.agent_vms import RemoteLease, backup_vm_through_server
from strongroom.services.restore import VmRestored
from strongroom.services.vm_backup import VmBackupResult
from tests.export.conftest import libvhdi_read
from tests.helpers.images import KiB, MiB, touched
from tests.server.agent_fixtures import Site, bearer, site  # noqa: F401 (fixture)
from tests.server.test_agents_resume import Router, pair  # noqa: F401 (fixture)
from tests.vms.conftest import DISKS, QEMU, VmDaemon, run_dir, write_config  # noqa: F401 (fixture)

pytestmark = QEMU

VM = "vm1"
BS = 64 * KiB
SIZE = 4 * MiB
# (offset, length, pattern): four blocks, each of its own new content
CHANGES = {
    "disk0": [(1 * MiB, 64 * KiB, 0x22), (3 * MiB + 100, 10, 0x23)],
    "disk1": [(2 * MiB, 64 * KiB, 0x24), (2 * MiB + 64 * KiB, 64 * KiB, 0x25)],
}


@pytest.fixture
def catalog_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLite only: the catalog's part (migration 0006) is tested on both in tests/catalog."""
    monkeypatch.delenv("STRONGROOM_CATALOG", raising=False)
    return str(tmp_path / "catalog.sqlite")


@dataclass
class Nodes:
    site: Site
    router: Router
    creds: dict[str, dict[str, Any]]
    spec: VmSpec
    daemon: VmDaemon

    def store(self, node: str) -> RemoteStore:
        creds = self.creds[node]
        text = f"{creds['agent_id']}.{creds['secret']}"
        client = Client(["http://a", "http://b"], text, http=httpx.Client(transport=self.router))
        return RemoteStore(client, RepositoryInfo.from_doc(creds["repository"]))

    def backup(self, node: str) -> tuple[VmBackupResult, RemoteStore]:
        store = self.store(node)
        try:
            return backup_vm_through_server(store, self.spec, block_size=BS), store
        finally:
            store.close()

    def api(self, node: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer: httpx.Response = self.site.client.request(
            method, path, headers=bearer(self.creds[node]), **kwargs
        )
        return answer


@pytest.fixture
def nodes(
    pair: tuple[Site, TestClient, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
    run_dir: Path,  # noqa: F811
) -> Iterator[Nodes]:
    a, b, first = pair
    creds = {"node-a": a.enroll("node-a"), "node-b": a.enroll("node-b"), "node-c": first}
    for name in ("node-a", "node-b"):
        answer = a.client.put(
            f"/api/v1/machines/{name}/cluster",
            json={"cluster": "prod"},
            headers={"X-CSRF-Token": a.csrf},
        )
        assert answer.status_code == 200 and answer.json()["cluster"] == "prod", answer.text
    daemon = VmDaemon(tmp_path / "shared", run_dir / "qsd").create(SIZE, fill=0x11).start()
    spec = VmSpec(VM, daemon.qmp, daemon.nbd, list(daemon.disks), scratch=str(tmp_path / "scr"))
    try:
        yield Nodes(a, Router({"a": a.client, "b": b}), creds, spec, daemon)
    finally:
        daemon.stop()


def test_two_nodes_of_a_cluster_take_turns_and_others_see_nothing(
    nodes: Nodes, tmp_path: Path
) -> None:
    first, store = nodes.backup("node-a")
    assert first.point.host == "prod" and first.point.kind == PointKind.VM
    assert store.traffic.missing > 0

    for disk, extents in CHANGES.items():
        nodes.daemon.write(disk, *(f"write -P {p} {o} {n}" for o, n, p in extents))
    second, store = nodes.backup("node-b")
    assert second.point.parent == first.point.id and second.point.host == "prod"
    changed = {disk: touched([(o, n) for o, n, _ in ext], BS) for disk, ext in CHANGES.items()}
    for d in second.disks:
        assert d["tracker"] == "bitmap" and d["blocks_changed"] == len(changed[d["disk"]]), d
    # only the changed blocks, one map segment and root per disk, the manifest
    assert store.traffic.missing == sum(map(len, changed.values())) + 2 * 2 + 1
    assert store.stats.chunks_added == store.traffic.missing
    # the parent's manifest, then each disk's root (twice) and segment: maps read once
    assert store.traffic.chunks_read == 1 + 2 * 3
    assert nodes.daemon.leftovers() == []  # views torn down, as locally
    assert all(len(nodes.daemon.our_bitmaps(d)) == 1 for d in nodes.daemon.disks)

    reader = nodes.store("node-b")
    done = restore_own_point(reader, second.point.id[:12], str(tmp_path / "restored"))
    assert isinstance(done, VmRestored)
    assert sorted(d for d, _, _ in done.disks) == sorted(nodes.daemon.disks)
    for disk, where, summary in done.disks:
        assert not summary.damaged
        assert nodes.daemon.difference(disk, Path(where)) is None
    # the same point as one VHD per disk, read back by libvhdi
    found, exported = export_image_through_server(reader, second.point.id, tmp_path / "vhds")
    assert found.id == second.point.id
    assert sorted(Path(e.path).name for e in exported) == sorted(f"{d}.vhd" for d in DISKS)
    assert len({e.uuid for e in exported}) == len(exported)  # each disk its own id
    for e in exported:
        raw = tmp_path / "restored" / Path(e.path).name.replace(".vhd", ".raw")
        assert libvhdi_read([Path(e.path)]) == raw.read_bytes()

    # node-c, outside the cluster: no VM point listed or read, no lease
    outsider = nodes.store("node-c")
    assert [p for p in agent_points(outsider) if p.kind == PointKind.VM] == []
    with pytest.raises(PointNotFound):
        restore_own_point(outsider, second.point.id[:12], str(tmp_path / "nope"))
    took = nodes.api("node-c", "POST", f"/api/v1/agent/vms/{VM}/lease", json={"ttl": 30})
    assert took.status_code == 403 and "no cluster" in took.json()["error"]
    with pytest.raises(UsageError, match=r"^this machine is in no cluster: an administrator"):
        nodes.backup("node-c")
    listed = nodes.api("node-a", "GET", "/api/v1/agent/points").json()
    assert [p["id"] for p in listed] == [first.point.id, second.point.id]


def test_the_lease_held_by_one_node_makes_another_busy(nodes: Nodes) -> None:
    store_a = nodes.store("node-a")
    lease = RemoteLease(store_a.client, VM, 30.0).acquire()
    try:
        lease.annotate(views=["sr-left-behind"])
        lease.verify()
        with pytest.raises(LeaseBusy, match="busy: held by node-a"):
            nodes.backup("node-b")
        forged = nodes.api(
            "node-b",
            "POST",
            f"/api/v1/agent/vms/{VM}/lease/renew",
            json={"holder": lease.holder, "ttl": 30},
        )
        assert forged.status_code == 409  # B cannot renew A's lease with A's holder id
    finally:
        lease.release()
    taken = nodes.api("node-b", "POST", f"/api/v1/agent/vms/{VM}/lease", json={"ttl": 30})
    assert taken.status_code == 201, taken.text
    assert taken.json()["inherited"]["notes"] == {"views": ["sr-left-behind"]}
    assert taken.json()["inherited"]["host"] == "node-a"
    bad = nodes.api("node-b", "POST", "/api/v1/agent/vms/..%2Fx/lease", json={"ttl": 30})
    assert bad.status_code in (400, 404)


def test_a_dead_nodes_lease_expires_and_its_views_are_handed_over(nodes: Nodes) -> None:
    repo = nodes.site.intake.repo
    lease_id = repo.lease_id(cluster_lease_key("prod", VM))
    record = LeaseRecord(0, "0123456789abcdef", "node-a", 0, time.time() + 60, time.time(),
                         f"VM {VM}", {"views": ["sr-dead"]}, "agent:node-a")  # fmt: skip
    repo.leases().write(lease_id, record)  # node-a holds it, then dies
    busy = nodes.api("node-b", "POST", f"/api/v1/agent/vms/{VM}/lease", json={"ttl": 30})
    assert busy.status_code == 409 and "held by node-a" in busy.json()["error"]
    expired = replace(record, generation=1, expires=time.time() - 1)  # its TTL passed
    repo.leases().write(lease_id, expired)
    taken = nodes.api("node-b", "POST", f"/api/v1/agent/vms/{VM}/lease", json={"ttl": 30})
    assert taken.status_code == 201, taken.text
    assert taken.json()["inherited"] == {
        "host": "node-a", "taken": record.taken, "notes": {"views": ["sr-dead"]}}  # fmt: skip
    stale = nodes.api("node-a", "POST", f"/api/v1/agent/vms/{VM}/lease/verify",
                      json={"holder": record.holder})  # fmt: skip
    assert stale.status_code == 409  # the dead node's holder id holds nothing now


def test_vm_commits_with_a_missing_map_or_a_foreign_parent_are_refused(nodes: Nodes) -> None:
    first, _ = nodes.backup("node-a")
    store = nodes.store("node-a")
    manifest = VmManifest(VM, [VmDisk("disk0", SIZE, BS, os.urandom(32).hex())])
    unstored_map = save_vm_manifest(store, manifest)
    store.flush()
    store.close()
    base = first.point.to_doc()
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("node-a", {**base, "tree": unstored_map.hex()}, "block map is not stored"),
        ("node-a", {**base, "paths": ["vm:other"]}, "of another VM"),
        ("node-a", {**base, "paths": ["vm:../x"]}, "a VM name is 1-64"),
        ("node-a", {**base, "host": "node-a"}, "host is this machine's cluster"),
        ("node-c", {**base, "parent": None}, "in no cluster"),
        ("node-a", {**base, "parent": "ab" * 32}, "the parent is not a point of this"),
    ]
    for node, doc, why in cases:
        answer = nodes.api(
            node, "POST", "/api/v1/agent/points", json={"point": doc, "commit_id": "c" * 32}
        )
        assert answer.status_code == 422 and why in answer.json()["error"], (why, answer.text)
    listed = nodes.api("node-b", "GET", "/api/v1/agent/points").json()
    assert [p["id"] for p in listed] == [first.point.id]  # nothing forged was saved


def test_backup_vm_and_restore_through_the_cli(
    nodes: Nodes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`strongroom backup --vm NAME --agent-config` and `restore --server`
    (the CLI in process, its HTTP to the in-process servers)."""
    config = write_config(tmp_path / "vms.toml", {VM: {
        "qmp": nodes.spec.qmp, "nbd": nodes.spec.nbd, "disks": nodes.spec.disks,
        "scratch": str(tmp_path / "scr")}})  # fmt: skip
    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    monkeypatch.delenv("STRONGROOM_REPO", raising=False)
    router = nodes.router

    def client(urls: list[str], bearer_text: str, *, ca_cert: str | None = None) -> Client:
        return Client(urls, bearer_text, http=httpx.Client(transport=router))

    monkeypatch.setattr(agent_backup, "Client", client)
    paths = {}
    for node in ("node-a", "node-b"):
        creds = nodes.creds[node]
        paths[node] = str(tmp_path / f"{node}.json")
        AgentConfig(["http://a", "http://b"], node, creds["agent_id"], creds["secret"],
                    RepositoryInfo.from_doc(creds["repository"])).save(paths[node])  # fmt: skip

    def run(*args: str) -> dict[str, Any]:
        done = click.testing.CliRunner().invoke(cli, ["--json", *args])
        assert done.exit_code == 0, (done.output, done.exception)
        doc: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return doc

    first = run("backup", "--vm", VM, "--agent-config", paths["node-a"])
    assert first["host"] == "prod" and first["traffic"]["missing"] > 0
    nodes.daemon.write("disk1", "write -P 0x44 0 4k")
    second = run("backup", "--vm", VM, "--agent-config", paths["node-b"])
    assert second["parent"] == first["point_id"]
    assert [d["blocks_changed"] for d in second["disks"]] == [0, 1]
    assert second["traffic"]["missing"] == 1 + 2 + 1  # the block, disk1's map, the manifest
    out = tmp_path / "restored"
    restored = run("restore", second["point_id"][:12], "--target", str(out),
                   "--agent-config", paths["node-a"])  # fmt: skip
    assert [d["disk"] for d in restored["disks"]] == list(nodes.daemon.disks)
    for disk in nodes.daemon.disks:
        assert nodes.daemon.difference(disk, out / f"{disk}.raw") is None
