"""Regressions for the review of the VM backup path: each test is a scenario
that once produced a wrong point, a stuck guest, a leaked view or a lost file."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import strongroom.services.vm_backup as vmb
from strongroom.errors import StorageError
from strongroom.repository.leases import (
    LEASES_PREFIX,
    Lease,
    LeaseBusy,
    LeaseRecord,
    LeaseStore,
)
from strongroom.repository.repo import Repository
from strongroom.sources.live import _HOST_TAG
from tests.helpers.images import KiB, MiB
from tests.vms.conftest import VM, Cluster


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


def test_the_reaper_never_unlinks_a_file_a_node_names(cluster: Cluster, tmp_path: Path) -> None:
    victim = tmp_path / "victim.img"
    victim.write_bytes(bytes(65536))
    token = f"4000000-{_HOST_TAG}-abcdef"  # a pid beyond pid_max: "dead"
    with cluster.daemon.control() as control:
        control.execute(
            "blockdev-add",
            {
                "driver": "raw",
                "node-name": f"sr-fleece-{token}",
                "file": {"driver": "file", "filename": str(victim)},
                "read-only": True,
            },
        )
    cluster.backup()
    assert victim.exists(), "strongroom deleted a file that a block-layer node named"


def test_a_thaw_that_fails_makes_the_point_crash_consistent(
    cluster: Cluster, run_dir: Path
) -> None:
    """Windows' VSS provider stops holding writes after 10 s and says so at thaw."""
    path = run_dir / "fake-qga.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                for line in f:
                    request = json.loads(line.lstrip(b"\xff"))
                    command = request["execute"]
                    if command.startswith("guest-sync"):
                        reply = (
                            b"\xff" + json.dumps({"return": request["arguments"]["id"]}).encode()
                        )
                    elif command == "guest-fsfreeze-freeze":
                        reply = json.dumps({"return": 2}).encode()
                    else:
                        error = {"class": "GenericError", "desc": "couldn't hold writes"}
                        reply = json.dumps({"error": error}).encode()
                    f.write(reply + b"\n")
                    f.flush()

    threading.Thread(target=serve, daemon=True).start()
    try:
        cluster.configure(guest_agent=str(path))
        result = cluster.backup()
    finally:
        server.close()
    assert result.consistency == "crash-consistent" == result.point.consistency
    assert any("couldn't hold writes" in w for w in result.warnings), result.warnings


def test_an_interrupt_during_the_transaction_leaves_no_job(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU applied the transaction but the answer never reached us: the job
    (which taxes every write) must still be torn down."""

    def interrupted(qmp: Any, disks: Any) -> float:
        actions = []
        for disk, plan in disks:
            actions += disk.view_actions(plan)
            disk._steps.append("job")
        qmp.execute("transaction", {"actions": actions})
        raise KeyboardInterrupt

    monkeypatch.setattr(vmb, "freeze_together", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cluster.backup()
    assert cluster.daemon.leftovers() == []


class _Ambiguous:
    """A backend whose next create lands but reports an error (a lost answer)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ambiguous = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create(self, name: str, data: bytes) -> None:
        self.inner.create(name, data)
        if self.ambiguous:
            self.ambiguous -= 1
            raise StorageError("timeout after the write landed")


def test_a_renewal_that_landed_despite_an_error_keeps_the_lease(local_repo: Repository) -> None:
    backend = _Ambiguous(local_repo.backend)
    store = LeaseStore(backend, local_repo.sealer)  # type: ignore[arg-type]
    lease_id = local_repo.lease_id("vm:x")
    lease = Lease(store, lease_id, "VM x", ttl=60).acquire()
    backend.ambiguous = 1
    with pytest.raises(StorageError):
        lease.renew()  # landed, reported as failed
    lease.renew()  # finds its own record: still ours
    lease.verify()
    lease.release()
    Lease(store, lease_id, "VM x", ttl=60).acquire().release()  # handed back for real


def test_a_live_holder_with_our_host_name_elsewhere_keeps_its_lease(
    local_repo: Repository,
) -> None:
    store = local_repo.leases()
    lease_id = local_repo.lease_id("vm:x")
    record = LeaseRecord(
        0, "aa", socket.gethostname(), 4_000_000, time.time() + 60, time.time(), "VM x",
        host_id="another-container",
    )  # fmt: skip
    store.write(lease_id, record)
    with pytest.raises(LeaseBusy):
        Lease(store, lease_id, "VM x").acquire()


def test_an_unreadable_generation_does_not_block_the_lease(local_repo: Repository) -> None:
    store = local_repo.leases()
    lease_id = local_repo.lease_id("vm:x")
    local_repo.backend.create(f"{LEASES_PREFIX}{lease_id}/0000000000000007", b"junk")
    with Lease(store, lease_id, "VM x").acquire() as lease:
        assert lease.generation == 8
