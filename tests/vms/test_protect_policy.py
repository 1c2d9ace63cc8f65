"""A VM as a source of a protection policy (`strongroom protect --policy NAME`).

The service runs the policy's hooks around the VM's freezing transaction: pre
hooks, the guest freeze (here the VM's freeze/thaw commands, standing for its
guest agent), the QMP transaction, the thaw, post hooks. Every hook and the
guest freeze must succeed for an application-consistent point; anything else
gives a crash-consistent point that says why. Writers on the VM's disks log
when each record was sent and acknowledged: every point holds what was
acknowledged before its transaction and nothing sent after it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from strongroom.config import load_settings
from strongroom.services import vm_backup
from strongroom.services.protect_service import (
    CycleOutcome,
    repository_opener,
    run_service,
    select_policies,
)
from tests.helpers.cli import PASSWORD
from tests.helpers.images import MiB
from tests.vms.conftest import QEMU, VM, Cluster, Writer, read_slots
from tests.vms.test_instant import check_instant, latest

pytestmark = QEMU

CYCLE = 2  # seconds
SLOTS = 256


@pytest.fixture(autouse=True)
def short_cycles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_TEST_MIN_CYCLE", "1")


def logger(log: Path) -> str:
    """A command that logs which step ran (STRONGROOM_HOOK: pre/post for a
    policy's hook, freeze/thaw for the VM's guest commands) and when."""
    return f'echo "$STRONGROOM_HOOK $(date +%s.%N)" >> {log}'


def steps(log: Path) -> list[tuple[str, float]]:
    lines = log.read_text().split("\n") if log.exists() else []
    return [(what, float(when)) for what, when in (line.split() for line in lines if line)]


def command_hook(pre: str | None = None, post: str | None = None, timeout: str = "") -> str:
    """A `hooks` entry as TOML inline table text."""
    parts = ['type = "command"']
    parts += [f"{k} = {json.dumps(v)}" for k, v in (("pre", pre), ("post", post)) if v]
    parts += [f'timeout = "{timeout}"'] if timeout else []
    return "[{" + ", ".join(parts) + "}]"


def write_policy(cluster: Cluster, log: Path, hooks: str, extra: str = "", **vm: object) -> None:
    cluster.configure(freeze_command=logger(log), thaw_command=logger(log), **vm)
    with open(cluster.config, "a", encoding="utf-8") as f:
        f.write(
            f'[protect.p]\nsources = ["vm:{VM}"]\ncycle = "{CYCLE}s"\nhooks = {hooks}\n{extra}\n'
        )


def protect(cluster: Cluster, cycles: int) -> list[dict[str, Any]]:
    result = cluster.cli("--json", "protect", "--policy", "p", "--cycles", str(cycles))
    assert result.rc == 0, result.err
    assert "Traceback" not in result.err, result.err
    return [json.loads(line) for line in result.out.splitlines() if line.strip()]


def status(cluster: Cluster) -> dict[str, Any]:
    result = cluster.cli("--json", "status")
    assert result.rc == 0, result.err
    (source,) = json.loads(result.out)["sources"]
    assert isinstance(source, dict)
    return source


def test_vm_source_cycles_hold_their_instant_with_hooks_around_the_guest_freeze(
    cluster: Cluster, writers: Callable[..., Writer], tmp_path: Path
) -> None:
    log = tmp_path / "steps.log"
    write_policy(cluster, log, command_hook(logger(log), logger(log)), 'freeze_timeout = "5s"')
    daemon = cluster.daemon
    regions = {1: ("disk0", 2 * MiB), 2: ("disk1", 0)}
    started = {
        wid: writers(wid, [daemon.uri(disk)], offset, SLOTS, pause=0.001)
        for wid, (disk, offset) in regions.items()
    }
    for w in started.values():
        w.wait_ready()
    try:
        done = protect(cluster, 3)
    finally:
        logs = {wid: w.stop() for wid, w in started.items()}
    source = status(cluster)  # before the restores: the lag grows meanwhile

    assert [o["error"] for o in done] == [""] * 3, done
    assert [o["consistency"] for o in done] == ["application-consistent"] * 3, done
    assert [o["full"] for o in done] == [True, False, False], done
    assert all(o["bytes_shipped"] > 0 for o in done), done
    points = {p.id: p for p in cluster.points()}
    # Each cycle: pre hook, guest freeze, the transaction, guest thaw, post hook.
    ran = steps(log)
    assert [what for what, _ in ran] == ["pre", "freeze", "thaw", "post"] * 3, ran
    for i, outcome in enumerate(done):
        point = points[outcome["point"]]
        record = point.summary["protect"]
        assert record["name"] == "p" and record["reason"] == ""
        assert point.consistency == "application-consistent"
        sent, returned = record["transaction"]["sent"], record["transaction"]["returned"]
        (_, t_pre), (_, t_freeze), (_, t_thaw), (_, t_post) = ran[4 * i : 4 * i + 4]
        assert t_pre < t_freeze < sent <= returned < t_thaw < t_post
        assert [h["phase"] for h in record["quiesce"]["hooks"]] == ["pre", "post"]
        restored = cluster.restore(point.id, tmp_path / f"r{i}")
        for wid, (disk, offset) in regions.items():
            held = latest(read_slots(restored[disk], offset, SLOTS), wid)
            before, _during, after = check_instant(held, logs[wid], sent, returned)
            assert before >= 10 and after >= 1, (i, wid, before, after)

    assert source["kind"] == "vm" and source["source"] == "p", source
    assert source["last_point"]["id"] == done[-1]["point"]
    assert source["last_point"]["consistency"] == "application-consistent"
    assert source["points"] == 3 and source["last_error"] is None
    assert source["lag_seconds"] < 2 * CYCLE and not source["late"], source
    assert source["bytes_shipped"] == [o["bytes_shipped"] for o in done]
    cluster.assert_clean()


def test_a_failing_pre_hook_gives_crash_consistent_points_and_retention_applies(
    cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "steps.log"
    hooks = command_hook("echo cannot flush >&2; exit 3", logger(log))
    write_policy(cluster, log, hooks, "retention = {keep_last = 1}")
    cluster.daemon.write("disk0", "write -P 0x5a 0 1M")
    done = protect(cluster, 2)
    assert all(o["error"] == "" and o["point"] for o in done), done
    assert all(o["consistency"] == "crash-consistent" for o in done), done
    assert all("exited 3" in o["reason"] and "cannot flush" in o["reason"] for o in done), done
    # The guest was frozen all the same and the post hook (the user's resume) ran.
    assert [what for what, _ in steps(log)] == ["freeze", "thaw", "post"] * 2
    # keep_last = 1: the second cycle forgot the first point; the kept one is whole.
    assert done[1]["forgotten"] == [done[0]["point"]]
    (point,) = cluster.points()
    assert point.id == done[1]["point"] and point.consistency == "crash-consistent"
    assert "exited 3" in point.summary["protect"]["reason"]
    cluster.assert_point_is_now(point.id)

    source = status(cluster)
    assert source["points"] == 1 and source["last_error"] is None
    assert source["last_point"]["consistency"] == "crash-consistent"
    assert "exited 3" in source["last_point"]["reason"]
    assert len(source["bytes_shipped"]) == 2


def test_a_hanging_hook_and_transaction_never_keep_the_guest_frozen_past_the_timeout(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: the pre hook hangs (cut at its 1 s timeout) and the freezing
    transaction takes 2.5 s; the guest is thawed at the 1 s freeze timeout all
    the same, the cycle ends with a crash-consistent point saying both."""
    log = tmp_path / "steps.log"
    hooks = command_hook(f"sleep 30; {logger(log)}", logger(log), timeout="1s")
    write_policy(cluster, log, hooks, 'freeze_timeout = "1s"')
    real = vm_backup.freeze_together
    transaction: list[float] = []

    def slow(*args: Any, **kwargs: Any) -> float:
        transaction.append(time.time())
        time.sleep(2.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(vm_backup, "freeze_together", slow)
    settings = load_settings(path=cluster.config)
    done: list[CycleOutcome] = []
    t0 = time.monotonic()
    run_service(
        settings,
        select_policies(settings, ["p"]),
        repository_opener(str(cluster.repo_path), PASSWORD.encode()),
        threading.Event(),
        done.append,
        max_cycles=1,
    )
    assert time.monotonic() - t0 < 15
    (outcome,) = done
    assert outcome.error == "" and outcome.point is not None
    assert outcome.consistency == "crash-consistent"
    assert "timed out after 1 s" in outcome.reason, outcome.reason
    assert "the freeze outlived its timeout (1 s)" in outcome.reason, outcome.reason
    ran = steps(log)
    assert [what for what, _ in ran] == ["freeze", "thaw", "post"], ran  # the pre was killed
    (_, t_freeze), (_, t_thaw), (_, t_post) = ran
    (sent,) = transaction
    assert t_freeze < sent and t_thaw - t_freeze < 2.0, "the guest stayed frozen"
    assert t_post > sent + 2.5  # after the transaction and the thaw
    assert outcome.point.summary["protect"]["quiesce"]["writers_held_seconds"] < 2.0
    cluster.assert_point_is_now(outcome.point.id)
    cluster.assert_clean()
