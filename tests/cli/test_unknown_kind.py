"""A point of a kind this version does not know (a later version's, or one a
key holder forged over a valid file tree) is listed but never read as files:
restore, ls and dump refuse it in one escaped line, check and the damage
report do not walk it."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.services.maintenance import damaged_paths
from strongroom.services.points import load_point
from strongroom.services.walk import iter_tree
from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner, open_local_repository

KIND = "seed\nFAKE LINE"


@pytest.fixture
def seed_point(backed_up: BackedUp, repo_path: Path) -> str:
    """A copy of the backed-up point (its tree is a valid file tree) under an unknown kind."""
    repo = open_local_repository(repo_path)
    try:
        doc = repo.load_point(backed_up.point_id)
        doc["kind"] = KIND
        doc["tags"] = ["seed"]
        return repo.save_point(doc)
    finally:
        repo.close()


def _refused(result_err: str, point: str) -> None:
    assert (
        f"point {point[:8]} is of kind seed\\x0aFAKE LINE, which this strongroom cannot read"
        in (result_err)
    )
    assert not any(line.startswith("FAKE LINE") for line in result_err.splitlines())


def test_restore_refuses_an_unknown_kind(cli: CliRunner, seed_point: str, tmp_path: Path) -> None:
    target = tmp_path / "out"
    result = cli("restore", seed_point, "--target", str(target))
    assert result.rc == 2, result.err
    _refused(result.err, seed_point)
    assert not target.exists() or not any(target.iterdir())


def test_ls_and_dump_refuse_an_unknown_kind(
    cli: CliRunner, seed_point: str, backed_up: BackedUp
) -> None:
    name = sorted(backed_up.files)[0]
    for args in (("ls", seed_point), ("dump", seed_point, "/" + name)):
        result = cli(*args)
        assert result.rc == 2, (args, result.err)
        assert result.out == ""
        _refused(result.err, seed_point)


def test_damage_report_does_not_walk_an_unknown_kind(seed_point: str, repo_path: Path) -> None:
    repo = open_local_repository(repo_path)
    try:
        point = load_point(repo, seed_point)
        every_chunk = {
            c for _, node in iter_tree(repo, bytes.fromhex(point.tree)) for c in node.chunks
        }
        assert every_chunk  # the tree under it is a real one, with data
        assert damaged_paths(repo, point, every_chunk) == []
    finally:
        repo.close()
