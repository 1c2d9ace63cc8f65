"""strongroom key list/add/remove/passwd."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.cli import PASSWORD, assert_one_line_error


def _ids(cli: CliRunner, password: str = PASSWORD) -> dict[str, bool]:
    result = cli("key", "list", "--json", env={"STRONGROOM_PASSWORD": password})
    assert result.rc == 0, result.err
    return {k["id"]: k["current"] for k in result.json()}


def test_key_add_then_open_with_the_new_password(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    added = cli("key", "add", "--json", env={"STRONGROOM_NEW_PASSWORD": "second"})
    assert added.rc == 0, added.err
    new_id = added.json()["added"]
    assert len(_ids(cli)) == 2
    # Both passwords open the repository, and each sees its own key as current.
    assert _ids(cli, "second")[new_id] is True
    assert _ids(cli)[new_id] is False
    assert cli("snapshots", env={"STRONGROOM_PASSWORD": "second"}).rc == 0

    pw_file = tmp_path / "third.txt"
    pw_file.write_text("third\nignored second line\n")
    assert cli("key", "add", "--new-password-file", str(pw_file)).rc == 0
    assert cli("snapshots", env={"STRONGROOM_PASSWORD": "third"}).rc == 0
    assert len(_ids(cli)) == 3


def test_key_passwd_makes_the_old_password_fail(cli: CliRunner, initialized_repo: Path) -> None:
    (old_id,) = _ids(cli)
    changed = cli("key", "passwd", "--json", env={"STRONGROOM_NEW_PASSWORD": "changed"})
    assert changed.rc == 0, changed.err
    new_id = changed.json()["key"]
    assert new_id != old_id

    old = cli("snapshots")
    assert old.rc == 12
    assert_one_line_error(old, "wrong password", only=True)
    assert _ids(cli, "changed") == {new_id: True}


def test_key_remove_refuses_the_key_in_use(cli: CliRunner, initialized_repo: Path) -> None:
    (current,) = _ids(cli)
    refused = cli("key", "remove", current[:10])
    assert refused.rc == 1
    assert_one_line_error(refused, "in use", only=True)
    assert _ids(cli) == {current: True}


def test_key_remove_another_key(cli: CliRunner, initialized_repo: Path) -> None:
    other = cli("key", "add", "--json", env={"STRONGROOM_NEW_PASSWORD": "other"}).json()["added"]
    removed = cli("key", "remove", other[:12])
    assert removed.rc == 0, removed.err
    assert f"removed key {other[:8]}" in removed.out
    assert cli("snapshots", env={"STRONGROOM_PASSWORD": "other"}).rc == 12
    assert len(_ids(cli)) == 1


def test_key_remove_unknown_or_ambiguous(cli: CliRunner, initialized_repo: Path) -> None:
    cli("key", "add", env={"STRONGROOM_NEW_PASSWORD": "other"})
    for prefix in ("zz", ""):
        result = cli("key", "remove", prefix)
        assert result.rc == 1
        assert_one_line_error(result, "match")
    assert len(_ids(cli)) == 2


def test_key_list_table(cli: CliRunner, initialized_repo: Path) -> None:
    (current,) = _ids(cli)
    result = cli("key", "list")
    assert result.rc == 0
    assert any(line.split()[:2] == ["*", current[:8]] for line in result.out.splitlines())


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_no_new_password_without_a_terminal_is_a_usage_error(
    cli: CliRunner, initialized_repo: Path, command: str
) -> None:
    """Regression: this once prompted anyway and failed with 'interrupted' (exit 130)."""
    result = cli("key", command)
    assert result.rc == 2
    assert_one_line_error(result, "password", only=True)
    assert len(_ids(cli)) == 1
