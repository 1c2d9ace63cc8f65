"""`backup --vm A --vm B` / `--vm all`: a cluster's VMs in one run, each its own
point under its own lease; one busy VM does not stop the others."""

from __future__ import annotations

import json

from strongroom.config import load_settings
from strongroom.services.points import list_points
from strongroom.services.vms import vm_lease
from tests.vms.conftest import Cluster, write_config


def two_vms(cluster: Cluster) -> None:
    """vm1 and vm2 on the same block layer, one disk each."""
    base = {k: v for k, v in cluster.configure().__dict__.items() if k in ("qmp", "nbd", "scratch")}
    tables = {
        "vm1": {**base, "disks": ["disk0"]},
        "vm2": {**base, "disks": ["disk1"]},
    }
    write_config(cluster.config, tables)


def all_points(cluster: Cluster) -> list[str]:
    with cluster.repository() as repo:
        return sorted(p.paths[0] for p in list_points(repo))


def test_all_vms_in_one_run(cluster: Cluster) -> None:
    two_vms(cluster)
    result = cluster.cli("backup", "--vm", "all", "--json")
    assert result.rc == 0, result.err
    summaries = [
        doc
        for doc in (json.loads(line) for line in result.out.splitlines() if line.strip())
        if doc.get("message_type") == "summary"
    ]
    assert [s["vm"] for s in summaries] == ["vm1", "vm2"]
    assert all(isinstance(s["instant"], float) for s in summaries)
    assert all_points(cluster) == ["vm:vm1", "vm:vm2"]


def test_a_busy_vm_does_not_stop_the_others(cluster: Cluster) -> None:
    two_vms(cluster)
    with cluster.repository() as repo:
        spec = load_settings(path=cluster.config).vms["vm1"]
        with vm_lease(repo, spec).acquire():
            result = cluster.cli("backup", "--vm", "vm1", "--vm", "vm2")
    assert result.rc == 11, result.err
    assert "VM vm1: VM vm1 is busy" in result.err
    assert all_points(cluster) == ["vm:vm2"]


def test_an_unknown_vm_stops_before_any_backup(cluster: Cluster) -> None:
    two_vms(cluster)
    result = cluster.cli("backup", "--vm", "vm1", "--vm", "nope")
    assert result.rc == 2
    assert "no VM 'nope'" in result.err
    assert all_points(cluster) == []
