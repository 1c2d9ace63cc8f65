"""Shared fixtures: an isolated environment, repositories in process and on disk,
and a runner for the real `strongroom` program.

Every test gets its own HOME / XDG folders below its tmp_path, a cheap KDF
(STRONGROOM_KDF) and a password in STRONGROOM_PASSWORD, so nothing touches the
real home directory or a real default repository, and tests run in parallel
(pytest-xdist) without sharing state.

`cli(...)` / `run_cli(...)` run strongroom as forks of a per-worker fork server
that imported the program once (tests/helpers/cli_zygote.py: ~0.4 s less per
run); STRONGROOM_TEST_FORK_CLI=0 runs every one as a fresh subprocess instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from strongroom.repository.repo import Repository
from strongroom.storage.local import LocalBackend
from strongroom.storage.memory import MemoryBackend
from tests.helpers.cli import FAST_KDF, PASSWORD, CliResult, run_cli

settings.register_profile(
    "strongroom",
    deadline=None,  # crypto and numpy make single examples slow on a busy CI box
    database=None,  # write nothing outside tmp_path
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("strongroom")
# Hypothesis caches constants (at collection) and failure patches in ./.hypothesis:
# keep them out of the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"strongroom-tests-hypothesis-{os.getuid()}")

_CLEARED = (
    "STRONGROOM_REPO",
    "STRONGROOM_PASSWORD_FILE",
    "STRONGROOM_NEW_PASSWORD",
    "STRONGROOM_CONFIG",
    "STRONGROOM_COMPRESSION",
    "STRONGROOM_INDEX_FLUSH_SECONDS",
    "STRONGROOM_NO_CACHE",
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("STRONGROOM_KDF", FAST_KDF)
    monkeypatch.setenv("STRONGROOM_PASSWORD", PASSWORD)
    # VM and protect jobs default to SCHED_IDLE (services/impact.py): on a CI box
    # whose cores the other test workers fill, they would crawl. Tests of the
    # priority itself say --priority.
    monkeypatch.setenv("STRONGROOM_PRIORITY", "normal")
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    """Where the test's on-disk repository lives (not created)."""
    return tmp_path / "repo"


@pytest.fixture
def cli_env(repo_path: Path) -> dict[str, str]:
    """The environment a `strongroom` subprocess runs with (repository = repo_path)."""
    env = dict(os.environ)
    env["STRONGROOM_REPO"] = str(repo_path)
    return env


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(cli_env: dict[str, str]) -> CliRunner:
    """`cli("backup", path, "--json", env={...}, input=b"", binary=False)` runs
    `strongroom` and returns (rc, stdout, stderr)."""

    def run(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> CliResult:
        full_env = {**cli_env, **(env or {})}
        return run_cli(list(args), full_env, **kwargs)  # type: ignore[arg-type]

    return run


def init_local_repository(path: Path, password: str = PASSWORD) -> None:
    """Create a repository on disk (in process: faster than `strongroom init`)."""
    Repository.init(LocalBackend(path), password.encode()).close()


def open_local_repository(path: Path, password: str = PASSWORD) -> Repository:
    return Repository.open(LocalBackend(path), password.encode())


@pytest.fixture
def initialized_repo(repo_path: Path) -> Path:
    """An empty repository on disk at repo_path, for CLI tests."""
    init_local_repository(repo_path)
    return repo_path


@pytest.fixture
def memory_repo() -> Iterator[Repository]:
    """A fresh repository in memory, opened."""
    repo = Repository.init(MemoryBackend(), PASSWORD.encode())
    yield repo
    repo.close()


@pytest.fixture
def local_repo(repo_path: Path) -> Iterator[Repository]:
    """A fresh repository on disk at repo_path, opened in process."""
    repo = Repository.init(LocalBackend(repo_path), PASSWORD.encode())
    yield repo
    repo.close()
