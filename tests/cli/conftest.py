"""Fixtures for CLI tests: a small source tree, and a repository with a point of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.tree import make_small_tree


@dataclass
class BackedUp:
    src: Path
    files: dict[str, bytes]
    point_id: str


@pytest.fixture
def small_src(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    return src, make_small_tree(src)


@pytest.fixture
def backed_up(
    small_src: tuple[Path, dict[str, bytes]], cli: CliRunner, initialized_repo: Path
) -> BackedUp:
    src, files = small_src
    result = cli("backup", str(src), "--json")
    assert result.rc == 0, result.err
    return BackedUp(src, files, result.summary()["point_id"])
