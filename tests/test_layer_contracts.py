"""The import contracts of pyproject.toml bite: a forbidden import, injected into
a copy of the source, breaks the contract that names it.

Contracts that go slack pass silently (before issue #11, `repository -> sources`,
`cli -> storage` and `protect -> boto3` all kept every contract green), so each
rule of docs/design.md ("Layers and their contracts") is broken here once, on
purpose, and lint-imports must say which contract it broke. lint-imports runs on
the copy (cwd and PYTHONPATH), never on the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "strongroom"

LAYERS = "Layers go downward only"
SOURCES = "Sources never import the repository"
STORAGE = "Storage knows nothing of chunks or keys"
CLI = "The CLI is wiring only"
SERVER = "The server is wiring only"
WEB = "The web framework only in the server"
BOTO3 = "boto3 only in the S3 backend"
CLICK = "click and rich only in the CLI"
CRYPTO = "Encryption, key derivation and compression only in the repository"
BLAKE3 = "blake3 only in the repository and protect's piece digests"
CDC = "Chunk boundaries only in chunking"
GUEST_FS = "Guest file system readers only in sources/image_files"
HTTPX = "The HTTP client only in the agent's remote package"

# (module written into the copy, what it imports, the contract that must break)
INJECTIONS = [
    # the examples
    ("repository/injected.py", "strongroom.sources.files", LAYERS),
    ("cli/injected.py", "strongroom.storage.local", CLI),
    ("cli/injected.py", "strongroom.protect.cycles", CLI),
    ("cli/injected.py", "boto3", BOTO3),
    ("protect/injected.py", "click", CLICK),
    ("protect/injected.py", "boto3", BOTO3),
    # the repository knows nothing of what is read, nor of chunking
    ("repository/injected.py", "strongroom.trackers.changes", LAYERS),
    ("repository/injected.py", "strongroom.formats.partitions", LAYERS),
    ("repository/injected.py", "strongroom.nbd.uri", LAYERS),
    ("repository/injected.py", "strongroom.chunking.cdc", LAYERS),
    ("sources/injected.py", "strongroom.repository.repo", SOURCES),
    ("storage/injected.py", "strongroom.model.tree", STORAGE),
    # siblings that are independent, and the direction of the layers
    ("pipeline/injected.py", "strongroom.protect.cycles", LAYERS),
    ("protect/injected.py", "strongroom.pipeline.backup", LAYERS),
    ("nbd/injected.py", "strongroom.formats.partitions", LAYERS),
    ("services/injected.py", "strongroom.cli.output", LAYERS),
    # the rest of the CLI's forbidden list
    ("cli/injected.py", "strongroom.repository.locks", CLI),
    ("cli/injected.py", "strongroom.sources.image_refs", CLI),
    ("cli/injected.py", "strongroom.pipeline.backup", CLI),
    ("cli/injected.py", "strongroom.nbd.limits", CLI),
    ("cli/injected.py", "strongroom.formats.vhd", CLI),
    ("cli/injected.py", "numpy", CLI),
    # third-party libraries stay in their leaf modules
    ("services/injected.py", "rich", CLICK),
    ("storage/injected.py", "botocore", BOTO3),
    ("sources/injected.py", "cryptography", CRYPTO),
    ("pipeline/injected.py", "zstandard", CRYPTO),
    ("services/injected.py", "argon2", CRYPTO),
    ("protect/injected.py", "blake3", BLAKE3),
    ("pipeline/injected.py", "pyfastcdc", CDC),
    ("services/injected.py", "pyfsext", GUEST_FS),
    # the backup server: wiring over services, below the CLI, owning the web framework
    ("server/injected.py", "strongroom.cli.output", LAYERS),
    ("services/injected.py", "strongroom.server.app", LAYERS),
    ("server/injected.py", "strongroom.repository.locks", SERVER),
    ("server/injected.py", "strongroom.catalog.schema", SERVER),
    ("services/injected.py", "fastapi", WEB),
    ("catalog/injected.py", "uvicorn", WEB),
    ("server/injected.py", "argon2", CRYPTO),
    # the agent's side: its HTTP client stays in remote/, reached through services
    ("services/injected.py", "httpx", HTTPX),
    ("cli/injected.py", "strongroom.remote.store", CLI),
]

# What the CLI may import besides itself (the rest is in the contract's forbidden list).
CLI_MAY_IMPORT = {"services", "server", "model", "types", "errors", "config", "priority", "cpu"}


def _contracts() -> dict[str, dict[str, Any]]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["name"]: c for c in doc["tool"]["importlinter"]["contracts"]}


def _lint(copy: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    lint = shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency (pip install -e '.[test]')"
    return subprocess.run(
        [lint, "--no-cache"], cwd=copy, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(PACKAGE, root / "src" / "strongroom", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    found = subprocess.run(
        [sys.executable, "-c", "import strongroom; print(strongroom.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(root), f"the copy is not what gets analysed: {found}"
    yield root


def test_the_unmodified_copy_keeps_every_contract(copy: Path) -> None:
    result = _lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in _contracts():
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "imported", "contract"),
    INJECTIONS,
    ids=[f"{m.split('/')[0]}->{i}" for m, i, _ in INJECTIONS],
)
def test_a_forbidden_import_breaks_its_contract(
    copy: Path, module: str, imported: str, contract: str
) -> None:
    assert contract in _contracts()
    target = copy / "src" / "strongroom" / module
    target.write_text(f'"""Injected by tests/test_layer_contracts.py."""\n\nimport {imported}\n')
    try:
        result = _lint(copy)
    finally:
        target.unlink()
    assert result.returncode != 0, result.stdout
    assert f"{contract} BROKEN" in result.stdout, result.stdout
    assert f"strongroom.{module[:-3].replace('/', '.')}" in result.stdout


def test_a_new_package_must_be_placed_in_a_layer(copy: Path) -> None:
    package = copy / "src" / "strongroom" / "unplaced"
    package.mkdir()
    (package / "__init__.py").write_text('"""Injected by tests/test_layer_contracts.py."""\n')
    try:
        result = _lint(copy)
    finally:
        shutil.rmtree(package)
    assert result.returncode != 0
    assert f"{LAYERS} is not configured correctly" in result.stdout + result.stderr or (
        f"{LAYERS} BROKEN" in result.stdout
    ), result.stdout + result.stderr


def test_the_cli_contract_names_every_package_it_may_not_import() -> None:
    """A package added later is either something the CLI may import or in the
    contract's forbidden list: never silently allowed."""
    packages = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").exists()) and not p.name.startswith("__")
    }
    forbidden = {
        str(m).removeprefix("strongroom.")
        for m in _contracts()[CLI]["forbidden_modules"]
        if str(m).startswith("strongroom.")
    }
    assert packages - {"cli"} == CLI_MAY_IMPORT | forbidden


def test_the_server_contract_names_every_package_it_may_not_import() -> None:
    """Like the CLI's: the server may import services and plain values only."""
    packages = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").exists()) and not p.name.startswith("__")
    }
    forbidden = {
        str(m).removeprefix("strongroom.")
        for m in _contracts()[SERVER]["forbidden_modules"]
        if str(m).startswith("strongroom.")
    }
    assert packages - {"server"} == (CLI_MAY_IMPORT - {"server"}) | forbidden
