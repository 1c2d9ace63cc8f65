"""Hosts of a cluster as network namespaces on this machine: the block layer in
one, a writer host in another, the backing-up host in a third, talking NBD and
QMP over TCP on a private /24 (a bridge in the block layer's namespace). The
shared storage (the disks, the scratch folder) is a folder all of them see."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.images import MiB
from tests.helpers.marks import IS_ROOT
from tests.vms.conftest import QEMU, Cluster, Writer, read_slots
from tests.vms.test_instant import latest

pytestmark = [QEMU, pytest.mark.root]

NET = "10.231.7"
BLOCK_LAYER = f"{NET}.1"
NBD_PORT, QMP_PORT = 10809, 4444


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def must(*args: str) -> None:
    done = ip(*args)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    """Namespaces "block" (NET.1, on a bridge), "writer" (NET.2) and "backup" (NET.3)."""
    if not IS_ROOT:
        pytest.skip("network namespaces need root")
    tag = f"sr{os.getpid() % 100000}"
    names = {role: f"{tag}-{role}" for role in ("block", "writer", "backup")}
    made: list[str] = []
    try:
        for name in names.values():
            done = ip("netns", "add", name)
            if done.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
            made.append(name)
        block = names["block"]
        done = ip("-n", block, "link", "add", "br0", "type", "bridge")
        if done.returncode != 0:
            pytest.skip(f"cannot create a bridge: {done.stderr.strip()}")
        must("-n", block, "addr", "add", f"{BLOCK_LAYER}/24", "dev", "br0")
        must("-n", block, "link", "set", "br0", "up")
        must("-n", block, "link", "set", "lo", "up")
        for host, role in ((2, "writer"), (3, "backup")):
            ns = names[role]
            port = f"to-{role}"
            must("-n", block, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", ns)  # fmt: skip
            must("-n", block, "link", "set", port, "master", "br0")
            must("-n", block, "link", "set", port, "up")
            must("-n", ns, "addr", "add", f"{NET}.{host}/24", "dev", "eth0")
            must("-n", ns, "link", "set", "eth0", "up")
            must("-n", ns, "link", "set", "lo", "up")
        yield names
    finally:
        for name in made:
            ip("netns", "del", name)


def inside(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns]


def test_block_layer_writer_and_backup_on_three_hosts(
    namespaces: dict[str, str],
    make_cluster: Callable[..., Cluster],
    writers: Callable[..., Writer],
    tmp_path: Path,
) -> None:
    cluster = make_cluster(netns=namespaces["block"], tcp=(BLOCK_LAYER, NBD_PORT, QMP_PORT))
    daemon = cluster.daemon
    assert cluster.spec().qmp == f"tcp:{BLOCK_LAYER}:{QMP_PORT}"
    assert cluster.spec().nbd == f"nbd://{BLOCK_LAYER}:{NBD_PORT}"
    backup_host = inside(namespaces["backup"])
    daemon.client_prefix = backup_host  # compare from the backing-up host, over TCP

    # The writer host writes record N to disk0, then to disk1, over TCP.
    offset, slots = 4 * MiB, 256
    writer = writers(
        3, [daemon.uri("disk0"), daemon.uri("disk1")], offset, slots,
        pause=0.001, prefix=inside(namespaces["writer"]),
    )  # fmt: skip
    writer.wait_ready()
    points = []
    try:
        for _ in range(2):
            points.append(cluster.backup_cli(prefix=backup_host))
    finally:
        writes = writer.stop()  # paused for the comparison below
    assert len(writes) > 40
    assert [p["disks"][0]["tracker"] for p in points] == ["full", "bitmap"]
    for summary in points:
        restored = cluster.restore(summary["point_id"], tmp_path / summary["point_id"][:8])
        first = max(latest(read_slots(restored["disk0"], offset, slots), 3))
        second = max(latest(read_slots(restored["disk1"], offset, slots), 3))
        assert first >= 0 and first - 1 <= second <= first, (first, second)

    final = cluster.backup_cli(prefix=backup_host)
    assert final["parent"] == points[-1]["point_id"]
    assert [d["tracker"] for d in final["disks"]] == ["bitmap", "bitmap"]
    cluster.assert_point_is_now(final["point_id"])
    cluster.assert_clean()
