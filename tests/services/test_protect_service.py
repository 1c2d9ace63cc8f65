"""services/protect_service.py in-process: what a source's thread and its
tracker child do, without running the whole service in a subprocess."""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.config import Settings
from strongroom.protect.policy import Policy, PolicySource, SourceKind
from strongroom.repository.repo import Repository
from strongroom.services import protect_service
from strongroom.services.protect_service import CycleOutcome, SourceRunner, TrackerChild

# Trackers size their kernel queues from sysctls that the overflow tests lower for
# a moment, and a fanotify mark sees the whole file system: every test that runs
# a tracker runs in one xdist worker, one after the other (CI: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("journal-trackers")


def test_the_tracker_child_gets_no_secret_but_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tracker needs no password: it must not see STRONGROOM_PASSWORD (a
    secret in /proc/PID/environ of a long-running child), yet it reads the
    same config file as the service."""
    tree = tmp_path / "tree"
    tree.mkdir()
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("STRONGROOM_PASSWORD", "hunter2-pw")
    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    child = TrackerChild(str(tree), str(tmp_path / "state"))
    child.ensure()
    try:
        assert child.proc is not None and child.proc.poll() is None
        environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes().split(b"\0")
    finally:
        child.stop()
    assert not [v for v in environ if v.startswith(b"STRONGROOM_PASSWORD=")]
    assert f"STRONGROOM_CONFIG={config}".encode() in environ


def _runner(
    tmp_path: Path, source: PolicySource, repo: Repository, max_cycles: int
) -> tuple[SourceRunner, list[CycleOutcome]]:
    @contextlib.contextmanager
    def open_repo() -> Iterator[Repository]:
        yield repo

    seen: list[CycleOutcome] = []
    policy = Policy("p", [source], cycle=0.1, freeze_timeout=2.0)
    runner = SourceRunner(
        policy,
        source,
        Settings(),
        open_repo,
        threading.Event(),
        seen.append,
        state_folder=lambda name: str(tmp_path / "state" / name),
        max_cycles=max_cycles,
    )
    return runner, seen


def test_a_status_record_that_cannot_be_written_does_not_end_the_source(
    tmp_path: Path, memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under the state folder (status.json not written) once: the
    source's thread went on dying silently (its source unprotected from then
    on, the service still running and, with every source gone, exiting 0)."""
    calls: list[str] = []

    def full_disk(state: str, source: str, *args: object, **kwargs: object) -> None:
        calls.append(source)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(protect_service, "record_cycle", full_disk)
    source = PolicySource("v", SourceKind.VOLUME, str(tmp_path / "not-attached.qcow2"))
    runner, seen = _runner(tmp_path, source, memory_repo, max_cycles=2)
    thread = threading.Thread(target=runner.run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert len(seen) == 2 and calls == ["v", "v"]
    assert all("not attached" in o.error for o in seen)


def test_a_tracker_that_cannot_start_is_not_respawned_every_half_second(tmp_path: Path) -> None:
    """The tree is gone (unmounted, removed): `journal run` exits at once. The
    service respawned a Python process every tick (0.5 s), each logging a
    warning, for as long as the tree stayed away."""
    child = TrackerChild(str(tmp_path / "gone"), str(tmp_path / "state"))
    deadline = time.monotonic() + 3.0
    starts = 0
    while time.monotonic() < deadline:
        before = child.proc
        child.ensure()
        starts += child.proc is not before
        time.sleep(0.5)
    assert child.proc is not None and child.proc.poll() is not None
    assert 1 <= starts <= 2
