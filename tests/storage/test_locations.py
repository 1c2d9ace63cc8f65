"""A storage location is never misread (issue #10).

`--repo sftp:user@host:/srv/repo` used to create a local folder literally
named `sftp:user@host:` and back up into it: a user who believed the
backups off-site had them on the same disk. Every `WORD:` location strongroom
does not support is now refused with exit 2; `./WORD:...` reaches a local
folder of that name. (SFTP itself is supported since: tests/storage/test_sftp.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import ExitCode, UsageError
from strongroom.storage import open_backend
from strongroom.storage.local import LocalBackend
from strongroom.storage.memory import MemoryBackend
from strongroom.storage.registry import check_location
from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error

UNSUPPORTED = [
    "rest:http://host:8000/",
    "b2:bucket:path",
    "azure:container:/",
    "gs:bucket:/",
    "swift:container:/path",
    "ssh://host/srv/repo",
    "http://host/repo",
    "smb://server/share",
    "memory:name",  # memory:// only
    "file:relative",  # file:// only
    "C:relative",
    "nbd+unix:///export",
]


@pytest.mark.parametrize("location", UNSUPPORTED)
def test_an_unsupported_scheme_is_refused_and_nothing_is_created(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(UsageError) as caught:
        open_backend(location)
    message = str(caught.value)
    assert "\n" not in message
    assert "s3:" in message and "file://" in message  # names the supported ones
    assert f"./{location}" in message  # and the way to a local folder of that name
    assert caught.value.exit_code == ExitCode.USAGE
    assert list(work.iterdir()) == []


@given(
    scheme=st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,12}", fullmatch=True),
    rest=st.text(min_size=0, max_size=20),
)
def test_any_word_colon_prefix_is_refused_unless_supported(scheme: str, rest: str) -> None:
    location = f"{scheme}:{rest}"
    supported = location.startswith(("s3:", "memory://", "file://", "sftp:", "rclone:"))
    if supported:
        return
    with pytest.raises(UsageError):
        check_location(location)


def test_dot_slash_and_absolute_paths_reach_a_folder_with_a_colon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_backend("./sftp:user@host:/srv/repo")
    assert isinstance(backend, LocalBackend)
    backend.put("config", b"x")
    assert (tmp_path / "sftp:user@host:" / "srv" / "repo" / "config").read_bytes() == b"x"
    backend.close()
    absolute = open_backend(str(tmp_path / "rclone:remote:path"))
    assert isinstance(absolute, LocalBackend)
    absolute.close()


def test_supported_locations_still_open(tmp_path: Path) -> None:
    assert isinstance(open_backend("memory://x"), MemoryBackend)
    local = open_backend(f"file://{tmp_path}/a")
    assert isinstance(local, LocalBackend)
    local.close()
    plain = open_backend(str(tmp_path / "b"))
    assert isinstance(plain, LocalBackend)
    plain.close()
    with pytest.raises(UsageError):
        open_backend("file://")
    with pytest.raises(UsageError):
        open_backend("")


@pytest.mark.parametrize("command", ["init", "backup"])
def test_cli_refuses_an_unsupported_repo_with_exit_2(
    command: str, cli: CliRunner, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_bytes(b"precious")
    args = [command] if command == "init" else [command, str(work / "data.txt")]
    result = cli("--repo", "b2:bucket:/srv/repo", *args, cwd=work)
    assert result.rc == ExitCode.USAGE, result.err
    assert_one_line_error(result, "b2:", "not a storage strongroom supports")
    assert sorted(os.listdir(work)) == ["data.txt"]  # no folder "b2:bucket:"


def test_cli_refuses_an_unsupported_repo_from_the_environment(
    cli: CliRunner, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = cli("snapshots", env={"STRONGROOM_REPO": "azure:container:/path"}, cwd=work)
    assert result.rc == ExitCode.USAGE, result.err
    assert_one_line_error(result, "azure:")
    assert os.listdir(work) == []


def test_protect_to_refuses_an_unsupported_destination(cli: CliRunner, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "tree").mkdir(parents=True)
    (work / "tree" / "f").write_bytes(b"data")
    state = tmp_path / "state"
    result = cli(
        "protect", str(work / "tree"), "--to", "b2:backup:/vhds", "--state", str(state),
        cwd=work,
    )  # fmt: skip
    assert result.rc == ExitCode.USAGE, result.err
    assert_one_line_error(result, "--to destination", "b2:")
    assert sorted(os.listdir(work)) == ["tree"]
