"""Exit codes and error messages: one line on stderr, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error


@pytest.mark.parametrize(
    "args",
    [("snapshots",), ("check",), ("ls", "latest"), ("restore", "latest", "--target", "/nowhere")],
)
def test_wrong_password_exits_12(
    cli: CliRunner, initialized_repo: Path, args: tuple[str, ...]
) -> None:
    result = cli(*args, env={"STRONGROOM_PASSWORD": "not the password"})
    assert result.rc == 12
    assert_one_line_error(result, "wrong password", only=True)
    assert result.out == ""
    assert not Path("/nowhere").exists()


def test_wrong_password_for_backup(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    result = cli("backup", str(tmp_path), env={"STRONGROOM_PASSWORD": "nope"})
    assert result.rc == 12
    assert_one_line_error(result, "wrong password", only=True)
    assert list((initialized_repo / "points").glob("*")) == []


@pytest.mark.parametrize("args", [("snapshots",), ("check",), ("prune",), ("key", "list")])
def test_repository_not_found_exits_10(
    tmp_path: Path, cli: CliRunner, args: tuple[str, ...]
) -> None:
    result = cli(*args, env={"STRONGROOM_REPO": str(tmp_path / "missing")})
    assert result.rc == 10
    assert_one_line_error(result, "no repository", only=True)
    assert not (tmp_path / "missing").exists() or not any((tmp_path / "missing").iterdir())


def test_backup_to_a_missing_configured_repository_exits_10(tmp_path: Path, cli: CliRunner) -> None:
    """Only the default repository is created on first use, not a configured one."""
    result = cli("backup", str(tmp_path / "home"), env={"STRONGROOM_REPO": str(tmp_path / "x")})
    assert result.rc == 10
    assert_one_line_error(result, "no repository")


def test_init_twice_fails(cli: CliRunner, initialized_repo: Path) -> None:
    result = cli("init")
    assert result.rc == 1
    assert_one_line_error(result, "already exists", only=True)


def test_no_password_available_is_a_usage_error(cli: CliRunner, initialized_repo: Path) -> None:
    result = cli("snapshots", env={"STRONGROOM_PASSWORD": ""})
    assert result.rc == 2
    assert_one_line_error(result, "password")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("snapshots", "--no-such-option"), "no-such-option"),
        (("no-such-command",), "no-such-command"),
        (("restore", "latest"), "--target"),
        (("forget",), "keep"),
        (("forget", "abcd", "--keep-last", "1"), "not both"),
        (("prune", "--max-unused", "lots"), "max-unused"),
        (("prune", "--max-unused", "150%"), "max-unused"),
        (("check", "--read-data-subset", "5/3"), "subset"),
        (("check", "--read-data-subset", "x"), "subset"),
        (("ls", "xyz"), "not a point id"),
    ],
)
def test_usage_errors_exit_2(
    cli: CliRunner, backed_up: BackedUp, args: tuple[str, ...], needle: str
) -> None:
    result = cli(*args)
    assert result.rc == 2, result.err
    assert "Traceback" not in result.err
    assert needle.lower() in result.err.lower()


def test_unsupported_repository_scheme_exits_2(cli: CliRunner) -> None:
    result = cli("snapshots", env={"STRONGROOM_REPO": "ftp://host/repo"})
    assert result.rc == 2
    assert_one_line_error(result, "ftp://")


@pytest.mark.parametrize(
    "args",
    [
        ("restore", "deadbeef", "--target", "x"),
        ("ls", "latest", "/no/such/path"),
        ("dump", "latest", "/no/such/file"),
    ],
)
def test_not_found_in_the_repository_exits_1(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp, args: tuple[str, ...]
) -> None:
    result = cli(*args)
    assert result.rc == 1
    assert_one_line_error(result)


def test_backup_of_a_missing_path_fails(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    result = cli("backup", str(tmp_path / "nothing-here"))
    assert result.rc == 1
    assert_one_line_error(result, "nothing-here")
    assert list((initialized_repo / "points").glob("*")) == []


def test_latest_in_an_empty_repository(cli: CliRunner, initialized_repo: Path) -> None:
    result = cli("restore", "latest", "--target", "x")
    assert result.rc == 1
    assert_one_line_error(result, "no recovery point")


def test_version(cli: CliRunner) -> None:
    result = cli("--version")
    assert result.rc == 0
    assert result.out.startswith("strongroom, version ")
