"""The tests' fork server (tests/helpers/cli_zygote.py) runs strongroom as a fresh
process would: same output and exit code, its own environment and directory,
and every setting read at import time is one that sends a run to a subprocess."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli as cli_helpers
from tests.helpers.cli import run_cli
from tests.helpers.cli_zygote import IMPORT_TIME_ENV

SRC = Path(__file__).parents[1] / "src" / "strongroom"


def _module_level_env_names(tree: ast.Module) -> set[str]:
    """STRONGROOM_ names in calls that run at import (outside any function body)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.Call):
            for sub in ast.walk(node):
                value = sub.value if isinstance(sub, ast.Constant) else None
                if isinstance(value, str) and value.startswith("STRONGROOM_"):
                    found.add(value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_every_setting_read_at_import_time_is_named() -> None:
    names: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        for name in _module_level_env_names(ast.parse(path.read_text())):
            names[name] = str(path.relative_to(SRC))
    assert "STRONGROOM_INDEX_FLUSH_SECONDS" in names  # the scan finds what it must
    missing = {n: p for n, p in names.items() if n not in IMPORT_TIME_ENV}
    assert not missing, f"add to cli_zygote.IMPORT_TIME_ENV: {missing}"


def _fresh(args: list[str], env: dict[str, str], **kwargs: object) -> cli_helpers.CliResult:
    return run_cli(args, env, command=cli_helpers.strongroom_command(), **kwargs)  # type: ignore[arg-type]


def test_a_forked_run_answers_as_a_fresh_process(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "STRONGROOM_REPO": "relative-repo"}
    assert cli_helpers._forked(env) is not None
    for args in (["--version"], ["no-such-command"], ["snapshots"]):
        forked = run_cli(args, env, cwd=tmp_path)
        fresh = _fresh(args, env, cwd=tmp_path)
        assert (forked.rc, forked.out, forked.err) == (fresh.rc, fresh.out, fresh.err), args
    assert run_cli(["snapshots"], env).rc == 10  # repository not found
    assert run_cli(["init"], env, cwd=tmp_path).rc == 0  # its env and its cwd
    assert (tmp_path / "relative-repo" / "config").exists()
    listed = run_cli(["snapshots", "--json"], env, cwd=tmp_path)
    assert listed.rc == 0 and listed.json() == []


def test_an_import_time_setting_sends_the_run_to_a_subprocess(cli_env: dict[str, str]) -> None:
    assert cli_helpers._forked(cli_env) is not None
    assert cli_helpers._forked({**cli_env, "STRONGROOM_INDEX_FLUSH_SECONDS": "0.5"}) is None
    assert cli_helpers._forked({**cli_env, "PYTHONPATH": os.devnull}) is None
    assert cli_helpers._forked({**cli_env, "LD_PRELOAD": os.devnull}) is None
    assert cli_helpers._forked({**cli_env, "LC_CTYPE": "xx_XX.test"}) is None


def test_a_run_past_its_timeout_is_killed(cli_env: dict[str, str], tmp_path: Path) -> None:
    fifo = tmp_path / "password"
    os.mkfifo(fifo)  # nobody writes: reading the password file blocks
    env = {**cli_env, "STRONGROOM_PASSWORD_FILE": str(fifo)}
    del env["STRONGROOM_PASSWORD"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli(["init"], env, timeout=0.5)
    assert run_cli(["--version"], cli_env).rc == 0  # the server goes on
