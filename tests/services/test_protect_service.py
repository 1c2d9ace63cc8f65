"""services/protect_service.py in-process: what a source's thread and its
tracker child do, without running the whole service in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.services.protect_service import TrackerChild

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
