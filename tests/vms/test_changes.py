"""Changed blocks of a VM's disks: the dirty bitmap that ended at the instant,
read exactly; a lost or inconsistent bitmap falls back to comparing, and says so."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

import strongroom.services.vm_backup as vmb
from strongroom.nbd.client import NbdClient
from tests.helpers.images import KiB, MiB, touched
from tests.vms.conftest import DISKS, QEMU, SIZE, VM, Cluster

pytestmark = QEMU

K64 = 64 * KiB
# 64 KiB-aligned extents written between two backups (several share a block,
# one crosses a block boundary, one is two blocks long).
EXTENTS = {
    "disk0": [(0, K64), (K64, K64), (3 * MiB + K64, 2 * K64), (15 * MiB - K64, 2 * K64)],
    "disk1": [(5 * MiB, K64), (9 * MiB, 2 * MiB), (12 * MiB + 15 * K64, K64)],
}


def per_disk(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(d["disk"]): d for d in summaries}


def write_extents(cluster: Cluster, pattern: int) -> None:
    for disk, extents in EXTENTS.items():
        cluster.daemon.write(disk, *(f"write -P {pattern} {o} {n}" for o, n in extents))


def test_incremental_reads_exactly_the_dirty_blocks(make_cluster: Callable[..., Cluster]) -> None:
    # Disks full of data: no block of theirs is a hole the NBD server would
    # send without data (bytes_read counts data bytes received).
    cluster = make_cluster(fill=0x11)
    first = cluster.backup()
    for d in first.disks:
        assert d["tracker"] == "full" and d["bytes_read"] == SIZE, d
    granularity = {}
    for disk in DISKS:
        (bitmap,) = cluster.daemon.our_bitmaps(disk)
        granularity[disk] = int(bitmap["granularity"])
        assert bitmap["persistent"] and bitmap["recording"], bitmap

    write_extents(cluster, 0x22)
    second = cluster.backup()
    disks = per_disk(second.disks)
    total = 0
    for disk, extents in EXTENTS.items():
        g = granularity[disk]
        d = disks[disk]
        assert d["block_size"] == g  # the bitmap counts in blocks of the map
        dirty = len(touched(extents, g))
        assert d["tracker"] == "bitmap" and d["tracker_note"] == "", d
        assert d["blocks_examined"] == dirty, d
        assert d["bytes_read"] == dirty * g, d
        assert d["blocks_changed"] == dirty and d["bytes_changed"] == dirty * g, d
        total += dirty * g
    summary = second.point.summary
    assert summary["tracker"] == "bitmap" and "tracker_note" not in summary
    assert summary["bytes_read"] == total
    assert second.point.parent == first.point.id
    cluster.assert_point_is_now(second.point.id)
    cluster.assert_clean()

    # Nothing written since: nothing read.
    third = cluster.backup()
    assert third.point.summary["tracker"] == "bitmap"
    assert third.point.summary["bytes_read"] == 0
    cluster.assert_point_is_now(third.point.id)


def assert_fallback(cluster: Cluster, why: str) -> str:
    """The next backup compares every block of every disk, says `why`, and is right."""
    result = cluster.backup()
    for d in result.disks:
        assert d["tracker"] == "compare", d
        assert why in d["tracker_note"], d
        assert d["bytes_read"] == SIZE, d
    summary = result.point.summary
    assert summary["tracker"] == "compare"
    assert why in summary["tracker_note"]
    cluster.assert_point_is_now(result.point.id)
    cluster.assert_clean()  # the broken lineage is gone, a new one started
    return result.point.id


def test_clean_restart_keeps_the_lineage_a_crash_falls_back_to_compare(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(fill=0x11)
    daemon = cluster.daemon
    cluster.backup()

    # A clean stop keeps the persistent bitmaps: the lineage goes on.
    write_extents(cluster, 0x22)
    daemon.stop()
    daemon.start()
    after_stop = cluster.backup()
    assert after_stop.point.summary["tracker"] == "bitmap", after_stop.point.summary
    cluster.assert_point_is_now(after_stop.point.id)

    # A bitmap loaded from the image is marked in use there: SIGKILL leaves it
    # inconsistent.
    daemon.stop()
    daemon.start()
    write_extents(cluster, 0x33)
    daemon.crash()
    daemon.start()
    for disk in DISKS:
        found = daemon.our_bitmaps(disk)
        assert found and all(b.get("inconsistent") for b in found), found
    daemon.write("disk1", "write -P 0x44 7M 64k")
    assert_fallback(cluster, "inconsistent")

    # A bitmap started since the daemon opened the image is only in its memory:
    # SIGKILL loses it.
    daemon.write("disk0", "write -P 0x45 2M 64k")
    daemon.crash()
    daemon.start()
    assert all(daemon.our_bitmaps(disk) == [] for disk in DISKS)
    daemon.write("disk0", "write -P 0x46 3M 64k")
    assert_fallback(cluster, "gone")

    daemon.write("disk0", "write -P 0x55 1M 64k")
    resumed = cluster.backup()
    assert resumed.point.summary["tracker"] == "bitmap"
    assert per_disk(resumed.disks)["disk0"]["blocks_examined"] == 1
    assert per_disk(resumed.disks)["disk1"]["blocks_examined"] == 0
    cluster.assert_point_is_now(resumed.point.id)


def test_a_removed_bitmap_falls_back_to_compare_for_that_disk_only(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(fill=0x11)
    daemon = cluster.daemon
    cluster.backup()
    (bitmap,) = daemon.our_bitmaps("disk1")
    with daemon.control() as qmp:
        qmp.execute("block-dirty-bitmap-remove", {"node": "disk1", "name": bitmap["name"]})
    write_extents(cluster, 0x22)

    result = cluster.backup()
    disks = per_disk(result.disks)
    assert disks["disk0"]["tracker"] == "bitmap" and disks["disk0"]["tracker_note"] == ""
    assert disks["disk1"]["tracker"] == "compare"
    assert (
        "gone" in disks["disk1"]["tracker_note"]
        and bitmap["name"] in disks["disk1"]["tracker_note"]
    )
    assert disks["disk1"]["bytes_read"] == SIZE
    assert result.point.summary["tracker"] == "bitmap+compare"
    assert result.point.summary["tracker_note"].startswith("disk1: ")
    cluster.assert_point_is_now(result.point.id)
    cluster.assert_clean()


# Regression: each disk once counted the repository session's cumulative bytes.
def test_data_added_is_counted_once_per_disk(cluster: Cluster) -> None:
    """disk0 gets 4 MiB of new data, disk1 2 MiB: the point says it stored about
    6 MiB, and `vm status` reports that as the bytes sent."""
    rng = random.Random(5)
    written = {"disk0": 4 * MiB, "disk1": 2 * MiB}
    for disk, length in written.items():
        with NbdClient.connect(cluster.daemon.uri(disk)) as client:
            client.pwrite(rng.randbytes(length), 0)
    summary = cluster.backup_cli()
    disks = per_disk(summary["disks"])
    slack = 256 * KiB  # block maps, manifest, sealing overhead
    status = cluster.cli("vm", "status", "--json")
    assert status.rc == 0, status.err
    (doc,) = status.json()
    assert doc["vm"] == VM
    for disk, length in written.items():
        assert length <= disks[disk]["data_added"] <= length + slack, (disk, disks[disk])
    assert 6 * MiB <= summary["data_added_stored"] <= 6 * MiB + slack, summary
    assert doc["last_point"]["bytes_sent"] == summary["data_added_stored"]


def test_a_lineage_rotated_between_plan_and_transaction_is_not_trusted(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled former holder (or anyone) rotates our bitmaps after we planned:
    the bitmap we would read no longer holds every write since the parent."""
    cluster.backup()
    with cluster.repository() as repo:
        prefix = vmb.vm_bitmap_prefix(repo, VM)
    real = vmb.freeze_together

    def interleaved(qmp: Any, disks: Any) -> float:
        ours = [b["name"] for b in cluster.daemon.our_bitmaps("disk0")]
        with cluster.daemon.control() as control:
            actions = [
                {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": prefix + ".x"}}
            ]
            actions += [
                {"type": "block-dirty-bitmap-disable", "data": {"node": "disk0", "name": name}}
                for name in ours
            ]
            control.execute("transaction", {"actions": actions})
        cluster.daemon.write("disk0", f"write -P 0x5a {3 * MiB} {64 * KiB}")
        return real(qmp, disks)

    monkeypatch.setattr(vmb, "freeze_together", interleaved)
    second = cluster.backup()
    disk0 = next(d for d in second.disks if d["disk"] == "disk0")
    assert disk0["tracker"] == "compare", disk0
    assert "changed while the snapshot" in disk0["tracker_note"]
    cluster.assert_point_is_now(second.point.id)
