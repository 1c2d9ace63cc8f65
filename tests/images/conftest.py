"""Block image tests: real qemu tools, a storage daemon driven over QMP, nbdkit.

The helpers are plain modules (tests/helpers/images.py, tests/helpers/block_servers.py);
these fixtures start the processes and stop whatever a test left running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.block_servers import Background, Nbdkit, QemuNbd, StorageDaemon


@pytest.fixture
def storage_daemon(tmp_path: Path) -> Iterator[Callable[..., StorageDaemon]]:
    """`storage_daemon(disk)` starts a daemon on a qcow2 file; all stop at teardown."""
    started: list[StorageDaemon] = []

    def start(disk: Path, name: str = "qsd", fmt: str = "qcow2") -> StorageDaemon:
        daemon = StorageDaemon(disk, tmp_path / name, fmt)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def nbdkit(tmp_path: Path) -> Iterator[Callable[..., Nbdkit]]:
    started: list[Nbdkit] = []

    def start(*args: str, name: str = "nbdkit") -> Nbdkit:
        server = Nbdkit(tmp_path / name, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def qemu_nbd(tmp_path: Path) -> Iterator[Callable[..., QemuNbd]]:
    started: list[QemuNbd] = []

    def start(image: Path, fmt: str = "qcow2", read_only: bool = False) -> QemuNbd:
        server = QemuNbd(image, fmt, tmp_path / f"qemu-nbd-{len(started)}", read_only)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def background(cli_env: dict[str, str]) -> Iterator[Callable[..., Background]]:
    """`background("serve", ...)` starts strongroom; anything left is killed at teardown."""
    started: list[Background] = []

    def start(*args: str) -> Background:
        proc = Background(cli_env, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
