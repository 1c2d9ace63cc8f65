"""Every benchmark imports (cheap: nothing runs), parses its options, and stays its scenario:
no benchmark imports another one or edits ``sys.path``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.bench.conftest import BENCH

BENCHMARKS = (
    "cdp",
    "cdp_service",
    "copy_repo",
    "files",
    "images",
    "media",
    "protect",
    "remote_cache",
    "restore_jobs",
    "seeds",
    "server",
    "startup",
    "vhd",
    "vms",
)


def test_the_benchmarks_are_the_files_in_bench() -> None:
    assert sorted(p.stem for p in BENCH.glob("*.py")) == sorted(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_imports_and_parses_its_quick_options(name: str, tmp_path: Path) -> None:
    module = importlib.import_module(name)
    args = module.parse_args(["--quick", "--workdir", str(tmp_path), "--json", "out.json"])
    assert args.quick and args.workdir == tmp_path
    assert args.json == Path("out.json") and not args.markdown
    assert callable(module.main)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_no_benchmark_imports_another_or_edits_sys_path(name: str) -> None:
    source = (BENCH / f"{name}.py").read_text()
    assert "sys.path" not in source
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {*BENCHMARKS, "dataset", "spawn"}


def test_the_readme_covers_every_benchmark() -> None:
    readme = (BENCH / "README.md").read_text()
    for name in BENCHMARKS:
        assert f"## `{name}.py`" in readme


def test_the_server_benchmark_parses_its_scenarios(tmp_path: Path) -> None:
    module = importlib.import_module("server")
    args = module.parse_args(["--quick", "--agents", "8,1,2", "--runs", "3", "--points", "0"])
    assert (args.size, args.agents, args.runs, args.points) == (64, [1, 2, 8], 3, 0)
    assert args.tools == ["strongroom", "restic"] and not args.two_servers
    with pytest.raises(SystemExit):
        module.parse_args(["--tools", "borg"])
