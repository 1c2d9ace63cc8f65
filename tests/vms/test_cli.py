"""The VM commands as a user meets them: vm list/status, backup/restore --vm,
forget across the cluster's hosts, check after prune."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from strongroom.errors import ExitCode
from tests.helpers.cli import assert_one_line_error
from tests.helpers.images import run
from tests.vms.conftest import DISKS, QEMU, SIZE, VM, Cluster

pytestmark = QEMU


def test_vm_list(cluster: Cluster) -> None:
    listed = cluster.cli("vm", "list", "--json")
    assert listed.rc == 0, listed.err
    assert listed.json() == [
        {"vm": VM, "disks": list(DISKS), "qmp": cluster.daemon.qmp, "nbd": cluster.daemon.nbd}
    ]
    text = cluster.cli("vm", "list")
    assert text.rc == 0, text.err
    assert VM in text.out and "disk0, disk1" in text.out


def test_backup_of_an_unknown_vm_is_a_usage_error(cluster: Cluster) -> None:
    result = cluster.cli("backup", "--vm", "unknown")
    assert result.rc == ExitCode.USAGE, result.err
    assert_one_line_error(result, "no VM 'unknown'", f"known: {VM}", only=True)
    status = cluster.cli("vm", "status", "unknown", "--json")
    assert status.rc == ExitCode.USAGE
    assert_one_line_error(status, "no VM 'unknown'", only=True)
    assert cluster.points() == []


def test_a_failing_disk_hands_the_lease_back(cluster: Cluster) -> None:
    cluster.configure(disks=["disk0", "nosuchdisk"])
    result = cluster.cli("backup", "--vm", VM, "--json")
    assert result.rc != 0
    assert_one_line_error(result, "nosuchdisk", only=True)
    cluster.configure()
    status = cluster.cli("vm", "status", "--json")
    assert status.json()[0]["lease_holder"] is None
    assert cluster.backup_cli()["consistency"] == "crash-consistent"
    assert cluster.daemon.leftovers() == []


def test_status_restore_forget_and_check_across_hosts(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cluster = make_cluster(fill=0x11)
    status = cluster.cli("vm", "status", "--json")
    assert status.rc == 0, status.err
    assert status.json() == [{"vm": VM, "points": 0, "last_point": None, "lease_holder": None}]

    # Two hosts of the cluster back the VM up in turn.
    with monkeypatch.context() as m:
        m.setattr(socket, "gethostname", lambda: "host-a")
        first = cluster.backup()
        cluster.daemon.write("disk1", "write -P 0x22 3M 128k")
        m.setattr(socket, "gethostname", lambda: "host-b")
        second = cluster.backup()
    assert (first.point.host, second.point.host) == ("host-a", "host-b")
    assert second.point.parent == first.point.id  # one series, whichever host took it

    status = cluster.cli("vm", "status", "--json")
    assert status.rc == 0, status.err
    (doc,) = status.json()
    last = doc["last_point"]
    summary = second.point.summary
    assert doc["points"] == 2 and doc["lease_holder"] is None
    assert last["id"] == second.point.id and last["host"] == "host-b"
    assert last["tracker"] == "bitmap" and last["consistency"] == "crash-consistent"
    assert last["bytes_changed"] == summary["bytes_changed"] == 1024 * 1024
    assert last["bytes_read"] == summary["bytes_read"] == 1024 * 1024
    assert last["bytes_sent"] == summary["data_added_stored"] > 0
    assert last["disks"] == 2
    text = cluster.cli("vm", "status")
    assert text.rc == 0 and "host-b" in text.out and "bitmap" in text.out

    # One disk of the newest point, into a file.
    one = tmp_path / "disk1.raw"
    restored = cluster.cli("restore", "--vm", VM, "latest", "--disk", "disk1", "--target", str(one))
    assert restored.rc == 0, restored.err
    assert sorted(tmp_path.glob("*.raw")) == [one]
    assert one.stat().st_size == SIZE
    assert cluster.daemon.difference("disk1", one) is None
    # Every disk of the older one, into a folder.
    folder = tmp_path / "first"
    restored = cluster.cli("restore", "--vm", VM, first.point.id[:10], "--target", str(folder))
    assert restored.rc == 0, restored.err
    assert sorted(p.name for p in folder.iterdir()) == ["disk0.raw", "disk1.raw"]
    assert cluster.daemon.difference("disk0", folder / "disk0.raw") is None
    assert cluster.daemon.difference("disk1", folder / "disk1.raw") is not None  # older
    # The same older point as one VHD per disk (`export`), read back by qemu-img.
    vhds = tmp_path / "vhds"
    exported = cluster.cli("--json", "export", first.point.id[:10], str(vhds))
    assert exported.rc == 0, exported.err
    doc = exported.values()[-1]  # after the progress lines
    assert doc["directory"] == str(vhds) and len(doc["files"]) == 2
    assert sorted(p.name for p in vhds.iterdir()) == ["disk0.vhd", "disk1.vhd"]
    for disk in ("disk0", "disk1"):
        same = run("qemu-img", "compare", "-f", "vpc", "-F", "raw",
                   vhds / f"{disk}.vhd", folder / f"{disk}.raw", check=False)  # fmt: skip
        assert same.returncode == 0, same.stdout + same.stderr

    # The VM's points form one group whichever host took them.
    forget = cluster.cli("forget", "--keep-last", "1", "--prune", "--json")
    assert forget.rc == 0, forget.err
    assert [p.id for p in cluster.points()] == [second.point.id]
    check = cluster.cli("check", "--read-data")
    assert check.rc == 0, check.out + check.err
    cluster.assert_point_is_now(second.point.id)

    # The lineage goes on from the point that was kept.
    cluster.daemon.write("disk0", "write -P 0x33 8M 64k")
    third = cluster.backup_cli()
    assert third["parent"] == second.point.id
    assert [d["tracker"] for d in third["disks"]] == ["bitmap", "bitmap"]
    cluster.assert_point_is_now(third["point_id"])


def test_restore_a_disk_back_into_the_block_layer(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(fill=0x11)
    point = cluster.backup_cli()
    saved = cluster.restore(point["point_id"], tmp_path / "saved")
    cluster.daemon.write("disk1", "write -P 0x66 0 4M", "write -z 9M 1M")  # damage
    assert cluster.daemon.difference("disk1", saved["disk1"]) is not None

    target = cluster.daemon.uri("disk1")
    result = cluster.cli("restore", "--vm", VM, "latest", "--disk", "disk1", "--target", target)
    assert result.rc == 0, result.err
    assert cluster.daemon.difference("disk1", saved["disk1"]) is None
    assert cluster.daemon.difference("disk0", saved["disk0"]) is None

    # Forced trackers: compare reads everything and finds the disks as they were;
    # --force stores them whole; the bitmap lineage goes on after both.
    compared = cluster.backup_cli("--changed-since", "compare")
    assert [d["tracker"] for d in compared["disks"]] == ["compare", "compare"]
    assert compared["bytes_read"] == 2 * SIZE and compared["bytes_changed"] == 0
    forced = cluster.backup_cli("--force")
    assert [d["tracker"] for d in forced["disks"]] == ["full", "full"]
    cluster.daemon.write("disk0", "write -P 0x67 5M 64k")
    auto = cluster.backup_cli()
    assert [d["tracker"] for d in auto["disks"]] == ["bitmap", "bitmap"]
    assert auto["bytes_read"] == 1024 * 1024
    cluster.assert_point_is_now(auto["point_id"])
    cluster.assert_clean()
