"""Settings: config file < environment < command line; passwords from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.config import load_settings
from strongroom.errors import ConfigError
from tests.conftest import CliRunner
from tests.helpers.cli import PASSWORD, assert_one_line_error, run_cli
from tests.helpers.tree import compressible_bytes, write_file


def test_repository_from_the_config_file(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "STRONGROOM_REPO"}
    repo = tmp_path / "from-config"
    config_dir = Path(env["XDG_CONFIG_HOME"]) / "strongroom"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(f'repo = "{repo}"\n')
    assert run_cli(["init"], env).rc == 0
    assert (repo / "config").is_file()
    # The environment beats the file, and --repo beats both.
    from_env = tmp_path / "from-env"
    assert run_cli(["init"], {**env, "STRONGROOM_REPO": str(from_env)}).rc == 0
    assert (from_env / "config").is_file()
    other = tmp_path / "from-option"
    assert (
        run_cli(["--repo", str(other), "init"], {**env, "STRONGROOM_REPO": str(from_env)}).rc == 0
    )
    assert (other / "config").is_file()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('colour = "blue"\n', "unknown setting"),
        ('password = "secret"\n', "password"),
        ("compression = 42\n", "compression"),
        ("this is not toml", "config file"),
    ],
)
def test_bad_config_files_are_usage_errors(
    tmp_path: Path, cli: CliRunner, content: str, needle: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content)
    result = cli("snapshots", env={"STRONGROOM_CONFIG": str(config)})
    assert result.rc == 2
    assert_one_line_error(result, needle)


def test_password_files(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    good = tmp_path / "pw"
    good.write_text(PASSWORD + "\n")
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    no_env = {"STRONGROOM_PASSWORD": ""}

    assert cli("-p", str(good), "snapshots", env=no_env).rc == 0
    assert cli("snapshots", env={**no_env, "STRONGROOM_PASSWORD_FILE": str(good)}).rc == 0
    assert cli("--password-file", str(bad), "snapshots", env=no_env).rc == 12
    config = tmp_path / "config.toml"
    config.write_text(f'password_file = "{good}"\n')
    assert cli("snapshots", env={**no_env, "STRONGROOM_CONFIG": str(config)}).rc == 0

    result = cli("-p", str(empty), "snapshots", env=no_env)
    assert result.rc == 2
    assert_one_line_error(result, "empty")
    missing = cli("-p", str(tmp_path / "missing"), "snapshots", env=no_env)
    assert missing.rc == 2
    assert_one_line_error(missing, "password file")


def test_password_file_option_beats_the_environment(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    # STRONGROOM_PASSWORD holds the right password; the option names a wrong one.
    assert cli("-p", str(bad), "snapshots").rc == 12


def test_password_commands(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    """restic's and borg's password command: no shell, the first line printed; a
    failure or an empty answer is a one-line usage error that shows nothing it printed."""
    secret = tmp_path / "secret dir" / "pw"
    secret.parent.mkdir()
    secret.write_text(PASSWORD + "\nsecond line\n")
    good = f"cat '{secret}'"
    no_env = {"STRONGROOM_PASSWORD": ""}

    assert cli("--password-command", good, "snapshots", env=no_env).rc == 0
    assert cli("snapshots", env={**no_env, "STRONGROOM_PASSWORD_COMMAND": good}).rc == 0
    config = tmp_path / "config.toml"
    config.write_text(f'password_command = "{good}"\n')
    assert cli("snapshots", env={**no_env, "STRONGROOM_CONFIG": str(config)}).rc == 0
    # The command line beats STRONGROOM_PASSWORD (which holds the right one here).
    assert cli("--password-command", "echo wrong-password", "snapshots").rc == 12
    # The command sees no STRONGROOM_PASSWORD* variable of ours.
    leak = cli(
        "--password-command",
        "sh -c 'echo ${STRONGROOM_PASSWORD_FILE:-none}-${STRONGROOM_PASSWORD:-none}'",
        "snapshots",
        env={"STRONGROOM_PASSWORD_FILE": "/nonexistent"},
    )
    assert leak.rc == 12  # it printed "none-none", a wrong password
    # ...but the user's own credentials (a vault token) do reach it.
    vault = cli(
        "--password-command",
        "sh -c 'echo $VAULT_TOKEN'",
        "snapshots",
        env={**no_env, "VAULT_TOKEN": PASSWORD},
    )
    assert vault.rc == 0

    failing = cli("--password-command", "sh -c 'echo hunter2; exit 3'", "snapshots", env=no_env)
    assert failing.rc == 2
    assert_one_line_error(failing, "failed (exit 3)")
    assert "hunter2" not in failing.out + failing.err
    for command, needle in [
        ("true", "printed no password"),
        ("/nonexistent/pass-helper", "pass-helper"),
        ("'unclosed", "password command"),
    ]:
        result = cli("--password-command", command, "snapshots", env=no_env)
        assert result.rc == 2, command
        assert_one_line_error(result, needle)
    both = cli("-p", str(secret), "--password-command", good, "snapshots", env=no_env)
    assert both.rc == 2
    assert_one_line_error(both, "exclude each other")
    env_both = {
        **no_env,
        "STRONGROOM_PASSWORD_FILE": str(secret),
        "STRONGROOM_PASSWORD_COMMAND": good,
    }
    assert_one_line_error(cli("snapshots", env=env_both), "keep one")
    # The environment's file replaces the config file's command.
    assert (
        cli(
            "snapshots",
            env={
                **no_env,
                "STRONGROOM_CONFIG": str(config),
                "STRONGROOM_PASSWORD_FILE": str(secret),
            },
        ).rc
        == 0
    )


def test_config_password_file_and_command_exclude_each_other(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('password_file = "/x"\npassword_command = "pass show repo"\n')
    with pytest.raises(ConfigError, match="exclude each other"):
        load_settings(env={}, path=config)
    config.write_text("password_command = 3\n")
    with pytest.raises(ConfigError, match="password_command"):
        load_settings(env={}, path=config)


@pytest.mark.parametrize(("level", "compressed"), [("0", False), ("3", True), ("auto", True)])
def test_compression_level_for_new_repositories(
    tmp_path: Path, cli: CliRunner, level: str, compressed: bool
) -> None:
    src = tmp_path / "src"
    data = compressible_bytes(2 * 1024 * 1024)
    write_file(src / "text", data)
    env = {"STRONGROOM_COMPRESSION": level}
    assert cli("init", env=env).rc == 0
    summary = cli("backup", str(src), "--json", env=env).summary()
    assert (summary["data_added_stored"] < len(data) / 2) is compressed


@pytest.mark.parametrize(
    ("text", "mode", "level"),
    [("auto", "auto", None), ("AUTO,3", "auto", 3), ("3", "always", 3), ("0", "always", 0)],
)
def test_compression_setting_names_a_mode_and_a_level(
    tmp_path: Path, text: str, mode: str, level: int | None
) -> None:
    settings = load_settings({"STRONGROOM_COMPRESSION": text}, tmp_path / "none.toml")
    assert (settings.compression_mode, settings.compression) == (mode, level)
    (tmp_path / "c.toml").write_text(f'compression = "{text}"\n')
    settings = load_settings({}, tmp_path / "c.toml")
    assert (settings.compression_mode, settings.compression) == (mode, level)


@pytest.mark.parametrize("text", ["max", "auto,", "fast,3", "auto,20", "-1", "auto,x"])
def test_malformed_compression_values(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="compression"):
        load_settings({"STRONGROOM_COMPRESSION": text}, tmp_path / "none.toml")


def test_malformed_compression_setting(cli: CliRunner) -> None:
    result = cli("init", env={"STRONGROOM_COMPRESSION": "max"})
    assert result.rc == 2
    assert_one_line_error(result, "compression")
