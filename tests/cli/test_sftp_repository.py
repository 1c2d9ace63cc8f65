"""A repository over SFTP through the CLI (issue #17): init, backup, an
incremental, restore byte- and metadata-exact, check --read-data, and a lock
that the server's exclusive rename keeps single."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.compare import walk_differences
from tests.helpers.sshd import HOST_ALIAS, SshServer, available, ssh_server
from tests.helpers.tree import random_bytes, write_file

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SshServer]:
    with ssh_server(tmp_path / "sshd") as running:
        yield running


def test_backup_restore_check_over_sftp(tmp_path: Path, cli: CliRunner, server: SshServer) -> None:
    repo = server.folder / "repo"
    env = {**server.env, "STRONGROOM_REPO": f"sftp://{HOST_ALIAS}/{repo}"}
    src = tmp_path / "src"
    write_file(src / "big.bin", random_bytes(3 << 20, 7))
    for i in range(30):
        write_file(src / "small" / f"{i}.txt", f"file {i}\n".encode() * (i + 1))
    (src / "link").symlink_to("small/1.txt")

    assert cli("init", env=env).rc == 0
    assert (repo / "config").is_file()  # really on the server's disk
    first = cli("backup", str(src), "--json", env=env)
    assert first.rc == 0, first.err
    write_file(src / "small" / "new.txt", b"added")
    second = cli("backup", str(src), "--json", env=env).summary()
    assert second["files_new"] == 1 and second["files_unmodified"] == 31

    target = tmp_path / "restored"
    done = cli("restore", "latest", "--target", str(target), env=env)
    assert done.rc == 0, done.err
    assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []
    check = cli("check", "--read-data", env=env)
    assert check.rc == 0, check.err
    assert list((repo / "tmp").iterdir()) == []  # no temporary object left behind


def test_backup_restore_check_through_rclone(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same round trip through `rclone serve sftp --stdio` on a local remote."""
    import shutil

    if shutil.which("rclone") is None:
        pytest.skip("rclone not installed")
    env = {
        "RCLONE_CONFIG_TESTLOCAL_TYPE": "local",
        "RCLONE_CONFIG": str(tmp_path / "no-rclone.conf"),
        "STRONGROOM_REPO": f"rclone:testlocal:{tmp_path}/remote/repo",
    }
    src = tmp_path / "src"
    write_file(src / "big.bin", random_bytes(2 << 20, 8))
    write_file(src / "a" / "b.txt", b"b")
    assert cli("init", env=env).rc == 0
    assert (tmp_path / "remote" / "repo" / "config").is_file()
    assert cli("backup", str(src), env=env).rc == 0
    target = tmp_path / "restored"
    assert cli("restore", "latest", "--target", str(target), env=env).rc == 0
    assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []
    assert cli("check", "--read-data", env=env).rc == 0


def test_the_local_cache_of_a_remote_repository(
    tmp_path: Path, cli: CliRunner, server: SshServer
) -> None:
    """`snapshots` and a backup fill $XDG_CACHE_HOME/strongroom/repository/<id>/;
    --no-cache reads past it; `cache` lists it and `cache --cleanup` removes it
    once unused for longer than --max-unused."""
    import os

    from strongroom.repository.blob_cache import DATABASE, count_entries

    env = {**server.env, "STRONGROOM_REPO": f"sftp://{HOST_ALIAS}/{server.folder}/cached"}
    src = tmp_path / "src"
    write_file(src / "a" / "f.txt", b"f")
    assert cli("init", env=env).rc == 0
    assert cli("backup", str(src), env=env).rc == 0
    cache_root = Path(os.environ["XDG_CACHE_HOME"]) / "strongroom" / "repository"

    assert cli("--no-cache", "snapshots", env=env).rc == 0
    assert cli("--no-cache", "backup", str(src), env=env).rc == 0
    assert not cache_root.exists()  # nothing cached with --no-cache

    assert cli("snapshots", env=env).rc == 0
    assert cli("backup", str(src), env=env).rc == 0
    (folder,) = cache_root.iterdir()
    kinds = {p.name: count_entries(str(p / DATABASE)) for p in folder.iterdir()}
    assert kinds["objects"] >= 2 and kinds["index"] >= 1 and kinds["trees"] >= 1, kinds
    assert len(cli("snapshots", "--json", env=env).json()) == 3

    listed = cli("cache", "--json").json()
    assert [(c["kind"], c["repository_id"]) for c in listed] == [("repository", folder.name)]
    kept = cli("cache", "--cleanup", "--json").json()
    assert kept == {"removed": []} and folder.exists()  # used just now
    removed = cli("cache", "--cleanup", "--max-unused", "0s", "--json").json()
    assert [c["path"] for c in removed["removed"]] == [str(folder)] and not folder.exists()
