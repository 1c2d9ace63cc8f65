"""The rclone backend: `rclone serve sftp --stdio` on a pipe, here with a
`local` remote defined by rclone's own environment variables (any remote rclone
knows works the same way). rclone's rename replaces a name, so exclusive create
is best effort and says so in its capabilities; leases refuse on it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import ObjectExists, UsageError
from strongroom.storage import Backend, open_backend
from strongroom.storage.sftp import RcloneBackend, parse_rclone_location
from strongroom.storage.testing import BackendContract

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A remote `testlocal:` of type local (rclone reads RCLONE_CONFIG_<NAME>_TYPE)."""
    monkeypatch.setenv("RCLONE_CONFIG_TESTLOCAL_TYPE", "local")
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "no-rclone.conf"))
    return tmp_path


class TestRcloneBackend(BackendContract):
    @pytest.fixture
    def backend(self, remote: Path) -> Iterator[Backend]:
        backend = RcloneBackend(f"rclone:testlocal:{remote}/store-{uuid.uuid4().hex}")
        yield backend
        backend.close()


def test_objects_land_on_the_remote_and_create_is_best_effort(remote: Path) -> None:
    backend = open_backend(f"rclone:testlocal:{remote}/repo")
    try:
        assert isinstance(backend, RcloneBackend)
        backend.put("data/ab/obj", b"content")
        assert (remote / "repo" / "data" / "ab" / "obj").read_bytes() == b"content"
        assert backend.capabilities.atomic_create is False
        backend.create("locks/x", b"1")
        with pytest.raises(ObjectExists):
            backend.create("locks/x", b"2")
        assert backend.get("locks/x") == b"1"
    finally:
        backend.close()


@pytest.mark.parametrize(
    "location", ["rclone:", "rclone:nocolon", "rclone:-x:/a", "rclone:r:a/../b"]
)
def test_malformed_rclone_locations(location: str) -> None:
    with pytest.raises(UsageError):
        parse_rclone_location(location)


def test_rclone_location_names_the_served_path() -> None:
    assert parse_rclone_location("rclone:b2prod:bucket/strongroom") == "b2prod:bucket/strongroom"
    assert parse_rclone_location("rclone:local:/srv/repo") == "local:/srv/repo"
