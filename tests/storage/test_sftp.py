"""The SFTP backend against a real OpenSSH server on loopback: the storage
contract, exclusive create, locations, and ssh's own refusals as one line."""

from __future__ import annotations

import os
import pwd
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import ObjectExists, StorageError, UsageError
from strongroom.storage import Backend, open_backend
from strongroom.storage.base import StreamingPut
from strongroom.storage.sftp import SftpBackend, parse_location
from strongroom.storage.testing import BackendContract
from tests.helpers.sshd import HOST_ALIAS, SshServer, available, ssh_server

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with ssh_server(tmp_path_factory.mktemp("sshd")) as running:
        yield running


@pytest.fixture
def sftp_env(server: SshServer, monkeypatch: pytest.MonkeyPatch) -> SshServer:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    return server


class TestSftpBackend(BackendContract):
    @pytest.fixture
    def backend(self, sftp_env: SshServer) -> Iterator[Backend]:
        folder = sftp_env.folder / "stores" / uuid.uuid4().hex
        backend = SftpBackend(f"sftp:{HOST_ALIAS}:{folder}")
        yield backend
        backend.close()


def test_create_is_exclusive_and_writes_are_atomic(sftp_env: SshServer) -> None:
    folder = sftp_env.folder / "stores" / "exclusive"
    backend = open_backend(f"sftp://{HOST_ALIAS}/{folder}")  # URL form, absolute path
    try:
        backend.create("locks/a", b"first")
        assert backend.capabilities.atomic_create  # OpenSSH's rename refused the probe
        with pytest.raises(ObjectExists):
            backend.create("locks/a", b"second")
        assert backend.get("locks/a") == b"first"
        assert isinstance(backend, StreamingPut)
        temp = backend.open_temp()
        temp.write(b"abc")
        assert [o.name for o in backend.list("")] == ["locks/a"]  # invisible until commit
        temp.commit("data/aa/streamed")
        assert backend.get_range("data/aa/streamed", 1, 10) == b"bc"
        assert sorted(os.listdir(folder / "tmp")) == []
        assert (folder / "data" / "aa" / "streamed").read_bytes() == b"abc"
    finally:
        backend.close()


def test_relative_path_is_below_the_login_home(sftp_env: SshServer) -> None:
    name = f"strongroom-sftp-test-{uuid.uuid4().hex}"
    backend = SftpBackend(f"sftp:{HOST_ALIAS}:{name}")
    try:
        backend.put("config", b"x")
        assert (Path(pwd.getpwuid(os.getuid()).pw_dir) / name / "config").read_bytes() == b"x"
    finally:
        backend.close()
        (Path(pwd.getpwuid(os.getuid()).pw_dir) / name / "config").unlink()
        for leftover in ("tmp", ""):
            os.rmdir(Path(pwd.getpwuid(os.getuid()).pw_dir) / name / leftover)


@pytest.mark.parametrize(
    ("location", "parsed"),
    [
        ("sftp:host:/srv/repo", (None, "host", None, "/srv/repo")),
        ("sftp:backup@host:repo/", ("backup", "host", None, "repo")),
        ("sftp://backup@host:2222//srv/repo", ("backup", "host", 2222, "/srv/repo")),
        ("sftp://host/relative", (None, "host", None, "relative")),
        ("sftp://[::1]:22//srv", (None, "::1", 22, "/srv")),
    ],
)
def test_locations_parse_as_restic_writes_them(
    location: str, parsed: tuple[str | None, str, int | None, str]
) -> None:
    assert parse_location(location) == parsed


@pytest.mark.parametrize(
    "location",
    ["sftp:host", "sftp:host:", "sftp://host", "sftp:-oProxyCommand=x:/r", "sftp:h:/a/../b"],
)
def test_malformed_locations_are_usage_errors(location: str) -> None:
    with pytest.raises(UsageError):
        parse_location(location)


def test_an_unknown_host_key_is_refused_in_one_line(
    sftp_env: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ssh decides (StrictHostKeyChecking): no prompt, no connection, its reason shown."""
    config = tmp_path / "ssh_config"
    config.write_text(
        sftp_env.client_config.read_text().replace(
            f"UserKnownHostsFile {sftp_env.folder}/known_hosts",
            f"UserKnownHostsFile {tmp_path}/none",
        )
    )
    monkeypatch.setenv("STRONGROOM_SFTP_ARGS", f"-F {config}")
    with pytest.raises(StorageError, match="Host key verification failed") as err:
        SftpBackend(f"sftp:{HOST_ALIAS}:/srv/nothing")
    assert "\n" not in str(err.value)
