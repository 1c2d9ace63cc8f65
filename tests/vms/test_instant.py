"""A VM point is its disks at one instant, while cluster hosts keep writing.

Writers log when each record was sent and when it was acknowledged; the
test times the freezing QMP `transaction` exactly (wrapping
`freeze_together`). Every write acknowledged before the transaction started
must be in the point, none sent after it returned may be; across two disks
written in a fixed order, no point holds the second write without the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from strongroom.services import vm_backup
from strongroom.sources import live
from strongroom.sources.live import _HOST_TAG
from tests.helpers.images import MiB
from tests.vms.conftest import QEMU, Cluster, Writer, read_slots
from tests.vms.writer import Write

pytestmark = QEMU


class Instant:
    """When the freezing transaction was sent and when it returned (time.time())."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[float] = []
        self.returned: list[float] = []
        self.reported: list[float] = []
        real = live.freeze_together  # what vm_backup calls, by the name it imported

        def timed(*args: Any, **kwargs: Any) -> float:
            self.started.append(time.time())
            try:
                return real(*args, **kwargs)
            finally:
                self.returned.append(time.time())

        monkeypatch.setattr(vm_backup, "freeze_together", timed)

    def on_frozen(self, instant: float) -> None:
        self.reported.append(instant)


def latest(slots: list[tuple[int, int] | None], writer: int) -> list[int]:
    """The sequence number each slot holds (-1: never written), checking the writer id."""
    out = []
    for i, found in enumerate(slots):
        if found is None:
            out.append(-1)
            continue
        wid, seq = found
        assert wid == writer, f"slot {i} of writer {writer} holds a record of writer {wid}"
        assert seq % len(slots) == i, f"record {seq} found in slot {i}"
        out.append(seq)
    return out


def check_instant(
    held: list[int], writes: list[Write], started: float, returned: float
) -> tuple[int, int, int]:
    """Every write acknowledged before `started` is in, none sent after `returned`.
    Returns how many writes were before, during and after the transaction."""
    before = during = after = 0
    for w in writes:
        value = held[w.seq % len(held)]
        if w.acked < started:
            before += 1
            assert value >= w.seq, f"write {w.seq}, acknowledged before the instant, is missing"
        elif w.sent > returned:
            after += 1
            assert value < w.seq, f"write {w.seq}, sent after the instant, is in the point"
        else:
            during += 1
    sent = max((w.seq for w in writes), default=-1)
    assert max(held) <= sent, f"the point holds record {max(held)}, never written"
    return before, during, after


def test_every_write_acknowledged_before_the_transaction_and_none_after(
    cluster: Cluster,
    writers: Callable[..., Writer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    daemon = cluster.daemon
    # Three hosts write to disk0 and one to disk1, each to a region of its own
    # (a ring of 4 KiB slots), without pause: the transaction lands among them.
    regions = {0: ("disk0", 0), 1: ("disk0", 4 * MiB), 2: ("disk0", 8 * MiB), 3: ("disk1", 0)}
    slots = 1024
    started = {
        wid: writers(wid, [daemon.uri(disk)], offset, slots, pause=0.0)
        for wid, (disk, offset) in regions.items()
    }
    for w in started.values():
        w.wait_ready()
    time.sleep(0.2)

    instant = Instant(monkeypatch)
    try:
        result = cluster.backup(on_frozen=instant.on_frozen)
        time.sleep(0.1)  # writes go on while the view is read and torn down
    finally:
        logs = {wid: w.stop() for wid, w in started.items()}
    (t_start,), (t_end,) = instant.started, instant.returned
    assert instant.reported == [result.point.summary["instant"]]
    assert t_start <= result.point.summary["instant"] <= t_end

    restored = cluster.restore(result.point.id, tmp_path / "restored")
    for wid, (disk, offset) in regions.items():
        held = latest(read_slots(restored[disk], offset, slots), wid)
        before, during, after = check_instant(held, logs[wid], t_start, t_end)
        # Not vacuous: the writer wrote on both sides of the instant.
        assert before >= 20 and after >= 1, (wid, before, during, after)
    assert result.consistency == "crash-consistent"
    assert cluster.daemon.leftovers() == []


def test_two_disks_written_in_order_never_hold_the_second_write_without_the_first(
    cluster: Cluster, writers: Callable[..., Writer], tmp_path: Path
) -> None:
    """Record N goes to disk0, then (once acknowledged) to disk1. At any instant
    disk1 holds N or N-1 when disk0 holds N; a point that froze the disks apart
    would show disk1 ahead, or more than one behind."""
    daemon = cluster.daemon
    offset, slots = 8 * MiB, 256
    writer = writers(7, [daemon.uri("disk0"), daemon.uri("disk1")], offset, slots, pause=0.0)
    writer.wait_ready()
    points = []
    try:
        for i in range(3):
            result = cluster.backup()
            assert result.point.summary["tracker"] == ("full" if i == 0 else "bitmap")
            points.append(result.point.id)
    finally:
        writes = writer.stop()
    assert len(writes) > 100
    seen = []
    for point_id in points:
        restored = cluster.restore(point_id, tmp_path / point_id[:8])
        first = max(latest(read_slots(restored["disk0"], offset, slots), 7))
        second = max(latest(read_slots(restored["disk1"], offset, slots), 7))
        assert first >= 0, "the writer had written before the backup"
        assert second <= first, f"disk1 holds record {second}, disk0 only {first}"
        assert second >= first - 1, f"disk1 holds record {second}, disk0 already {first}"
        seen.append(first)
    assert seen == sorted(seen) and len(set(seen)) == 3, seen

    # The incrementals lost nothing the writer wrote while they ran.
    final = cluster.backup()
    assert final.point.summary["tracker"] == "bitmap"
    cluster.assert_point_is_now(final.point.id)
    cluster.assert_clean()


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

    monkeypatch.setattr(vm_backup, "freeze_together", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cluster.backup()
    assert cluster.daemon.leftovers() == []
