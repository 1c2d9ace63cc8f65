"""The protection service shipping a protected volume into a VHD chain (a policy's
`destination`, services/chain_cycle.py), with the real tools: qemu-storage-daemon,
fsfreeze, libvhdi.

Each cycle's chain (base + differencing VHDs up to it), flattened by libvhdi, is a
clean ext4 file system holding every write acknowledged before the cycle began and
none begun after it ended; a cycle that failed leaves a chain whose next cycle
continues it; `status --json` reports the cycles.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from strongroom.config import Settings
from strongroom.protect.policy import Policy, PolicySource, SourceKind
from strongroom.repository.repo import Repository
from strongroom.services import protect_service
from strongroom.services.protect_service import CycleOutcome, SourceRunner, check_runnable
from strongroom.services.volumes import attach_volume, create_volume
from strongroom.sources.volume_state import volumes_dir
from tests.helpers.volumes import (
    MiB,
    Write,
    Writer,
    check_writes,
    clean_everything,
    mounted_ro,
    needs_volumes,
    payload,
)
from tests.protect.crashing import Failing, fail_once, nothing
from tests.protect.loopfs import ROOT
from tests.protect.mirror import chain_files, flatten
from tests.protect.test_service import outcomes, start_service, status, write_policy

pytestmark = [ROOT, needs_volumes]


@dataclass
class Vol:
    image: Path
    mount: Path
    chain: Path
    tmp: Path


@pytest.fixture
def vol(tmp_path: Path) -> Iterator[Vol]:
    image, mount = tmp_path / "vol.qcow2", tmp_path / "mnt"
    mount.mkdir()
    try:
        create_volume(str(image), 32 * MiB)
        attach_volume(str(image), str(mount))
        yield Vol(image, mount, tmp_path / "chain", tmp_path)
    finally:
        clean_everything(volumes_dir(), [mount, tmp_path / "ro"])


def check_chain(
    vol: Vol, cycles: int, log: list[Write], acked_before: float, started_before: float
) -> set[int]:
    """The chain's first `cycles` disks, flattened by libvhdi: clean ext4, holding
    every write of `log` acknowledged before `acked_before`, none begun after
    `started_before`. Returns the writes present."""
    files = chain_files(vol.chain, "c")[:cycles]
    assert len(files) == cycles, files
    flat = vol.tmp / f"flat-{cycles}.raw"
    flatten(files, flat)
    fsck = subprocess.run(["e2fsck", "-fn", str(flat)], capture_output=True, check=False)
    assert fsck.returncode == 0, fsck.stdout.decode()[-500:]
    with mounted_ro(flat, vol.tmp / f"ro{cycles}") as root:
        return check_writes(root, log, acked_before, started_before)


def write(folder: Path, log: list[Write]) -> None:
    """The Writer's next file, by hand (no cycle runs meanwhile)."""
    seq = len(log)
    log.append(Write(seq, time.time()))
    fd = os.open(folder / f"w{seq:06d}", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload(seq))
        os.fsync(fd)
    finally:
        os.close(fd)
    log[-1].acked = time.time()


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_service_ships_each_cycle_as_a_differencing_vhd_of_the_instant(
    vol: Vol, env: dict[str, str]
) -> None:
    """Three cycles of the service under a writer: each cycle's chain is the
    volume at that cycle; status --json reports the cycles and what they shipped."""
    writer = Writer(vol.mount).start()
    write_policy(env, "c", f'sources = ["{vol.image}"]\ndestination = "{vol.chain}"\ncycle = "2s"')
    try:
        done = outcomes(start_service(env, "--policy", "c", "--cycles", "3"))
    finally:
        writer.stop()
    assert [o["error"] for o in done] == [""] * 3, done
    assert {o["consistency"] for o in done} == {"application-consistent"}, done
    names = [Path(o["shipped_to"]).name for o in done]
    assert names == ["c-000000.vhd", "c-000001.vhd", "c-000002.vhd"]
    seen: list[set[int]] = []
    for i, o in enumerate(done):
        seen.append(check_chain(vol, i + 1, writer.log, _ts(o["started"]), _ts(o["finished"])))
    assert seen[0] < seen[1] < seen[2]  # each cycle carried new writes
    sizes = [p.stat().st_size for p in chain_files(vol.chain, "c")]
    assert [o["bytes_shipped"] for o in done] == sizes

    (doc,) = status(env)["sources"]
    assert doc["destination"] == str(vol.chain)
    assert doc["bytes_shipped"] == sizes
    assert doc["last_point"]["consistency"] == "application-consistent"
    assert doc["tracker_in_sync"] is True and doc["last_error"] is None


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    # No repository: a chain destination needs none (nor its password).
    return {
        **{k: v for k, v in cli_env.items() if k != "STRONGROOM_PASSWORD"},
        "STRONGROOM_CONFIG": str(tmp_path / "config.toml"),
        "STRONGROOM_TEST_MIN_CYCLE": "1",
    }


def test_a_failed_cycle_leaves_a_chain_the_next_cycle_continues(
    vol: Vol, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second cycle's shipment fails (nothing arrived): it is rolled back,
    and the next cycle ships cycle 1 again, with every change since cycle 0."""
    policy = Policy(
        "c", [PolicySource("c", SourceKind.VOLUME, str(vol.image))], str(vol.chain), 0.1
    )
    check_runnable([policy], Settings())
    failing = fail_once("the bucket went away")
    ships = iter([nothing, failing])
    monkeypatch.setattr(
        protect_service,
        "chain_destination",
        lambda where, limit=None: Failing(where, next(ships, nothing), nothing),
    )

    def cycle() -> CycleOutcome:
        seen: list[CycleOutcome] = []
        runner = SourceRunner(
            policy, policy.sources[0], Settings(), _no_repository, threading.Event(),
            seen.append, state_folder=lambda n: str(vol.tmp / "state" / n), max_cycles=1,
        )  # fmt: skip
        runner.run()
        return seen[0]

    log: list[Write] = []
    first = cycle()
    assert not first.error and first.shipped_to.endswith("c-000000.vhd")
    for _ in range(3):
        write(vol.mount, log)
    failed = cycle()
    assert "the bucket went away" in failed.error and not failed.shipped_to
    assert chain_files(vol.chain, "c") == [vol.chain / "c-000000.vhd"]
    write(vol.mount, log)
    again = cycle()
    assert not again.error and again.shipped_to.endswith("c-000001.vhd")
    held = check_chain(vol, 2, log, again.started.timestamp(), again.finished.timestamp())
    assert held == {0, 1, 2, 3}


def _no_repository() -> AbstractContextManager[Repository]:
    raise AssertionError("a chain destination opens no repository")
