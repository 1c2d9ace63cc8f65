"""`strongroom server --init` (the container image's entrypoint): a fresh
location gets a repository (not with a weak password) that `strongroom` then opens with the same
password; a location that holds one is never created again: with a wrong
password the server refuses to start and the repository is unchanged."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.cli import strongroom_command
from tests.server.test_server_process import _free_port, _stop, _wait_up


def _snapshot(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}


def test_server_init_creates_an_absent_repository_and_never_one_that_exists(
    cli: CliRunner, cli_env: dict[str, str], repo_path: Path, tmp_path: Path
) -> None:
    assert not repo_path.exists()
    without = cli("server", "--listen", "127.0.0.1:1")
    assert without.rc == 10 and "strongroom init" in without.err  # no --init: not created
    assert not (repo_path / "config").exists()
    weak = cli("server", "--init", "--listen", "127.0.0.1:1", env={"STRONGROOM_PASSWORD": "short"})
    assert weak.rc == 2 and "--init creates no repository" in weak.err
    assert not (repo_path / "config").exists()

    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*strongroom_command(), "server", "--init", "--listen", f"127.0.0.1:{port}"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_up(proc, f"http://127.0.0.1:{port}", log)
    finally:
        assert _stop(proc) == 0
    out = log.read_text()
    assert "created a new repository" in out and "shown only now" in out
    assert cli("snapshots").rc == 0  # a real repository, opened with the same password

    before = _snapshot(repo_path)
    wrong = cli("server", "--init", "--listen", "127.0.0.1:1",
                env={**env, "STRONGROOM_PASSWORD": "another password entirely"})  # fmt: skip
    assert wrong.rc == 12, wrong.err  # WrongPassword: the existing one is only opened
    assert _snapshot(repo_path) == before
