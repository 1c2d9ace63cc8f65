"""One VM, many hosts: the VM's lease lets one backup run at a time; a backup
killed mid-way leaves no half point and no view in the block layer, and the
next backup misses no change."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from strongroom.errors import ExitCode
from strongroom.repository.leases import LeaseBusy, LeaseLost, LeaseRecord
from strongroom.services.vms import vm_lease, vm_path
from tests.helpers.cli import assert_one_line_error
from tests.helpers.images import KiB, MiB, touched
from tests.vms.conftest import (
    DISKS,
    QEMU,
    VM,
    Cluster,
    Job,
    can_rename_host,
    hostname_prefix,
    this_host,
)

pytestmark = QEMU

RENAMES = pytest.mark.skipif(
    not can_rename_host(), reason="needs unshare --uts (root) to run a backup as another host"
)
BEFORE = {"disk0": [(1 * MiB, 64 * KiB)], "disk1": [(2 * MiB, 128 * KiB)]}
DURING = {"disk0": [(9 * MiB, 64 * KiB)], "disk1": [(4 * MiB + 64 * KiB, 64 * KiB)]}


def write(cluster: Cluster, extents: dict[str, list[tuple[int, int]]], pattern: int) -> None:
    for disk, found in extents.items():
        cluster.daemon.write(disk, *(f"write -P {pattern} {o} {n}" for o, n in found))


def status(cluster: Cluster) -> dict[str, Any]:
    result = cluster.cli("vm", "status", "--json")
    assert result.rc == 0, result.err
    (doc,) = result.json()
    assert doc["vm"] == VM
    return dict(doc)


def wait_for(cluster: Cluster, job: Job, what: str, count: int, timeout: float = 30) -> None:
    """Until the block layer holds `count` objects starting with `what` (the
    backup got that far), while the job runs."""
    deadline = time.monotonic() + timeout
    while sum(x.startswith(what) for x in cluster.daemon.leftovers()) < count:
        if job.proc.poll() is not None:
            raise AssertionError(f"the backup ended early: {job.wait().err}")
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def busy(cluster: Cluster, *needles: str, prefix: tuple[str, ...] = ()) -> None:
    result = cluster.cli("backup", "--vm", VM, "--json", prefix=prefix)
    assert result.rc == ExitCode.REPO_LOCKED, (result.rc, result.err)
    assert_one_line_error(result, "busy", *needles, only=True)


def test_two_hosts_start_at_once_exactly_one_proceeds(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    # The freeze hook keeps the winner inside its lease for a while.
    cluster.configure(freeze_command="sleep 2", thaw_command="true", freeze_timeout=10)
    hosts = ["host-a", "host-b"] if can_rename_host() else [this_host(), this_host()]
    prefixes = [hostname_prefix(h) if h != this_host() else [] for h in hosts]
    jobs = [cluster.start("backup", "--vm", VM, "--json", prefix=p) for p in prefixes]
    results = [job.wait() for job in jobs]
    winners = [i for i, r in enumerate(results) if r.rc == 0]
    assert len(winners) == 1, [(r.rc, r.err) for r in results]
    (loser,) = [r for r in results if r.rc != 0]
    assert loser.rc == ExitCode.REPO_LOCKED, loser.err
    assert_one_line_error(loser, "busy", f"VM {VM}", only=True)
    (point,) = cluster.points()
    assert point.host == hosts[winners[0]]
    assert point.consistency == "application-consistent"
    # The winner handed the lease back: the next backup need not wait.
    assert status(cluster)["lease_holder"] is None
    cluster.configure()
    assert cluster.backup_cli()["parent"] == point.id


@pytest.mark.parametrize(
    "hook",
    [
        # killed before the transaction: fleece nodes (and files) exist
        {"freeze_command": "sleep 30", "thaw_command": "true", "freeze_timeout": 60},
        # killed after it: copy-before-write jobs run, the bitmaps have rotated
        {"freeze_command": "true", "thaw_command": "sleep 30", "freeze_timeout": 60},
    ],
    ids=["in-freeze", "after-transaction"],
)
def test_a_backup_killed_midway_leaves_no_point_and_the_next_one_misses_nothing(
    make_cluster: Callable[..., Cluster], hook: dict[str, object]
) -> None:
    cluster = make_cluster(fill=0x11)
    first = cluster.backup()
    write(cluster, BEFORE, 0x21)

    cluster.configure(**hook)
    job = cluster.start("backup", "--vm", VM, "--json")
    stage = "job sr-job-" if hook.get("thaw_command") == "sleep 30" else "node sr-fleece-"
    wait_for(cluster, job, stage, len(DISKS))
    holder = status(cluster)["lease_holder"]
    assert holder is not None, "the lease is shown while the backup runs"
    assert holder["host"] == this_host() and holder["pid"] == job.proc.pid
    assert holder["expires"] > time.time()
    job.kill_group()  # SIGKILL, hook and all

    assert [p.id for p in cluster.points()] == [first.point.id]  # no half point
    assert status(cluster)["lease_holder"] is None  # its pid is gone from this host
    assert cluster.daemon.leftovers() != []  # what it left in the block layer
    write(cluster, DURING, 0x22)

    cluster.configure()
    summary = cluster.backup_cli()  # at once: no waiting for the lease to expire
    assert summary["parent"] == first.point.id
    for d in summary["disks"]:
        dirty = touched(BEFORE[d["disk"]] + DURING[d["disk"]], d["block_size"])
        assert d["tracker"] == "bitmap", d
        assert d["blocks_examined"] == len(dirty), d
    cluster.assert_point_is_now(summary["point_id"])
    cluster.assert_clean()  # the dead backup's views and files were reaped


def take_as(cluster: Cluster, host: str, expires: float) -> None:
    """Write the VM's next lease generation as a holder on `host` would."""
    with cluster.repository() as repo:
        store = repo.leases()
        lease_id = repo.lease_id(vm_path(VM))
        current = store.current(lease_id)
        store.write(
            lease_id,
            LeaseRecord(
                generation=0 if current is None else current.generation + 1,
                holder="0123456789abcdef",
                host=host,
                pid=os.getpid(),  # alive, but on another host: it means nothing here
                expires=expires,
                taken=time.time(),
                what=f"VM {VM}",
            ),
        )


def test_another_hosts_lease_must_expire_first(cluster: Cluster) -> None:
    expires = time.time() + 600
    take_as(cluster, "elsewhere", expires)
    holder = status(cluster)["lease_holder"]
    assert holder == {"host": "elsewhere", "pid": os.getpid(), "expires": expires}
    busy(cluster, "elsewhere")
    assert cluster.points() == []
    # Its last renewal runs out: then, and only then, the lease passes on.
    take_as(cluster, "elsewhere", time.time() + 1.0)
    with cluster.repository() as repo, pytest.raises(LeaseBusy):
        vm_lease(repo, cluster.spec()).acquire()
    time.sleep(1.1)
    assert status(cluster)["lease_holder"] is None
    summary = cluster.backup_cli()
    cluster.assert_point_is_now(summary["point_id"])


@RENAMES
def test_a_host_killed_midway_its_lease_expires_another_host_goes_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Host A dies after its transaction; this host waits for A's lease to expire
    (A's pid means nothing here), then backs up without missing A's changes."""
    cluster = make_cluster(fill=0x11)
    first = cluster.backup()
    write(cluster, BEFORE, 0x21)
    cluster.configure(
        freeze_command="true", thaw_command="sleep 30", freeze_timeout=60, lease_ttl=3
    )
    job = cluster.start("backup", "--vm", VM, "--json", prefix=hostname_prefix("host-a"))
    wait_for(cluster, job, "job sr-job-", len(DISKS))
    job.kill_group()
    with cluster.repository() as repo:  # at once: A renewed its lease < 1 s ago
        with pytest.raises(LeaseBusy, match="held by host-a"):
            vm_lease(repo, cluster.spec()).acquire()
        record = repo.leases().current(repo.lease_id(vm_path(VM)))
    assert record is not None and record.host == "host-a"
    write(cluster, DURING, 0x22)
    cluster.configure(lease_ttl=3)
    time.sleep(max(0.0, record.expires - time.time()) + 0.1)

    summary = cluster.backup_cli()
    assert summary["host"] == this_host() and summary["parent"] == first.point.id
    for d in summary["disks"]:
        dirty = touched(BEFORE[d["disk"]] + DURING[d["disk"]], d["block_size"])
        assert d["tracker"] == "bitmap" and d["blocks_examined"] == len(dirty), d
    cluster.assert_point_is_now(summary["point_id"])
    assert [p.id for p in cluster.points()][:-1] == [first.point.id]
    # Host A's views (named in its lease record) are reaped by the new holder:
    # nothing keeps copying A's writers' blocks into files nobody reads.
    cluster.assert_clean()


def test_a_backup_whose_lease_passed_on_commits_nothing(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Another host takes the lease over while this backup reads (after its
    instant): the backup must not commit, and the next one misses nothing."""
    cluster = make_cluster(fill=0x11)
    first = cluster.backup()
    write(cluster, BEFORE, 0x21)

    def taken_over(instant: float) -> None:
        take_as(cluster, "elsewhere", time.time() + 0.5)
        write(cluster, DURING, 0x22)  # after the instant

    with pytest.raises(LeaseLost, match="passed to another host"):
        cluster.backup(on_frozen=taken_over)
    assert [p.id for p in cluster.points()] == [first.point.id]
    assert cluster.daemon.leftovers() == []  # its views were torn down all the same
    time.sleep(0.6)

    summary = cluster.backup_cli()
    assert summary["parent"] == first.point.id
    for d in summary["disks"]:
        dirty = touched(BEFORE[d["disk"]] + DURING[d["disk"]], d["block_size"])
        assert d["tracker"] == "bitmap" and d["blocks_examined"] == len(dirty), d
    cluster.assert_point_is_now(summary["point_id"])
    cluster.assert_clean()
    # What the lost backup stored is unreferenced, not damage.
    check = cluster.cli("check", "--read-data")
    assert check.rc == 0, check.out + check.err
