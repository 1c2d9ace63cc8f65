"""`strongroom tag` (issue #17): add, remove, set; a retagged point gets a new id
that records the first one; restores and checks as before."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import assert_one_line_error
from tests.helpers.tree import write_file


def _points(cli: CliRunner) -> dict[str, list[str]]:
    return {p["id"]: p["tags"] for p in cli("snapshots", "--json").json()}


def test_tag_add_remove_set(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = tmp_path / "src"
    write_file(src / "f", b"data")
    first = cli("backup", str(src), "--tag", "daily", "--json").summary()["point_id"]
    other = cli("backup", str(src), "--host", "web", "--json").summary()["point_id"]

    dry = cli("tag", first[:8], "--add", "keep", "--dry-run", "--json").json()
    assert dry["changed"][0]["tags"] == ["daily", "keep"] and first in _points(cli)

    added = cli("tag", first[:8], "--add", "keep", "--add", "daily", "--json").json()
    (change,) = added["changed"]
    renamed = change["new_id"]
    assert change["old_id"] == first and renamed != first
    assert _points(cli) == {renamed: ["daily", "keep"], other: []}
    repo = open_local_repository(initialized_repo)
    assert repo.load_point(renamed)["original"] == first
    repo.close()

    cli("tag", renamed[:8], "--remove", "daily")
    (again,) = [i for i in _points(cli) if i != other]
    assert _points(cli)[again] == ["keep"]
    repo = open_local_repository(initialized_repo)
    assert repo.load_point(again)["original"] == first  # the first id, kept
    repo.close()

    unchanged = cli("tag", again[:8], "--add", "keep", "--json").json()
    assert unchanged["changed"] == [] and unchanged["unchanged"] == [again]

    cli("tag", "--host", "web", "--set", "web", "--set", "prod")  # every point of the filter
    tags = _points(cli)
    assert sorted(tags.values()) == [["keep"], ["prod", "web"]]
    cleared = cli("tag", "latest", "--host", "web", "--set", "", "--json").json()
    assert cleared["changed"][0]["tags"] == []

    target = tmp_path / "restored"
    assert cli("restore", again[:8], "--target", str(target)).rc == 0
    assert (target / str(src).lstrip("/") / "f").read_bytes() == b"data"
    assert cli("check").rc == 0


def test_bad_tag_requests_are_usage_errors(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    write_file(src / "f", b"data")
    cli("backup", str(src))
    for args, needle in [
        (["latest", "--add", "a,b"], "comma"),
        (["latest"], "give --add, --remove or --set"),
        (["latest", "--set", "x", "--add", "y"], "without --add"),
        (["latest", "--add", "bell\x07"], "control character"),
    ]:
        result = cli("tag", *args)
        assert result.rc == 2, (args, result)
        assert_one_line_error(result, needle)
