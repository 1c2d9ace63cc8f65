"""The rules every front end applies before work starts, now in services (issue
#11: the CLI is wiring only): which backup and protect options go together, the
password policy of a new repository, and restore's choice by point kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.errors import PointNotFound, UsageError
from strongroom.services.backup import check_options
from strongroom.services.protect import destination, protect_options
from strongroom.services.restore import FilesRestored, RestoreRequest, restore_point
from strongroom.services.session import (
    MIN_PASSWORD_LENGTH,
    LockMode,
    create_repository,
    open_repository,
    password_warning,
)
from tests.conftest import CliRunner
from tests.helpers.cli import PASSWORD


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"paths": True, "image": True}, "give PATHS"),
        ({}, "give PATHS"),
        ({"paths": True, "image_format": "qcow2"}, "--format and --allow-backing"),
        ({"vms": True, "allow_backing": True}, "--format and --allow-backing"),
        ({"vms": True, "dry_run": True}, "--dry-run is not available with --vm"),
        ({"vms": True, "changed_since": "bitmap"}, "with --vm, --changed-since"),
        ({"image": True, "dry_run": True}, "--dry-run is not available with --image"),
    ],
)
def test_backup_options_that_mean_nothing_are_refused(
    options: dict[str, object], message: str
) -> None:
    flags = {"paths": False, "image": False, "vms": False, **options}
    with pytest.raises(UsageError, match=message):
        check_options(**flags)  # type: ignore[arg-type]


def test_backup_options_give_the_tracker_and_force_means_none() -> None:
    assert check_options(paths=False, image=True, vms=False, changed_since="overlay") == "overlay"
    assert check_options(paths=False, image=False, vms=True, force=True) == "none"
    assert check_options(paths=True, image=False, vms=False, dry_run=True) == "auto"


def test_protect_options(tmp_path: Path) -> None:
    source = tmp_path / "Data Folder"
    source.mkdir()
    with pytest.raises(UsageError, match="say where cycles go"):
        protect_options(str(source), to=None, to_repository=False)
    with pytest.raises(UsageError, match="say where cycles go"):
        protect_options(str(source), to=str(tmp_path / "out"), to_repository=True)
    with pytest.raises(UsageError, match="--cycles goes with --every"):
        protect_options(str(source), to="x", to_repository=False, cycles=2)
    with pytest.raises(UsageError, match="--name"):
        protect_options(str(source), to="x", to_repository=False, name="../up")
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(4096))
    with pytest.raises(UsageError, match="backup --image"):
        protect_options(str(disk), to=None, to_repository=True)
    options = protect_options(str(source), to="x", to_repository=False, every=60, cycles=2)
    assert options.name == "data-folder"


def test_a_chain_destination_is_closed_on_leaving(tmp_path: Path) -> None:
    with destination(str(tmp_path / "chain"), None) as chain:
        assert chain.wants_vhd
    with pytest.raises(UsageError), destination(None, None):
        pass


def test_a_weak_password_is_refused_unless_asked_for(tmp_path: Path) -> None:
    weak = b"x" * (MIN_PASSWORD_LENGTH - 1)
    assert password_warning(weak) and password_warning(PASSWORD.encode()) is None
    with pytest.raises(UsageError, match="--insecure-password"):
        create_repository(str(tmp_path / "refused"), weak)
    assert not (tmp_path / "refused" / "config").exists()
    key = create_repository(str(tmp_path / "accepted"), weak, insecure_password=True)
    assert (tmp_path / "accepted" / key).is_file()


def test_restore_point_settles_usage_before_writing(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    assert cli("backup", str(src)).rc == 0
    target = tmp_path / "target"
    with open_repository(str(initialized_repo), PASSWORD.encode(), lock=LockMode.SHARED) as repo:
        with pytest.raises(UsageError, match="is a files point, not a VM point"):
            restore_point(repo, RestoreRequest("latest", str(target), disks=["sda"]))
        with pytest.raises(PointNotFound):
            restore_point(repo, RestoreRequest("latest", str(target), vm="web"))
        assert not target.exists()
        done = restore_point(repo, RestoreRequest("latest", str(target)))
    assert isinstance(done, FilesRestored) and done.summary.files == 1
    assert (target / str(src).lstrip("/") / "f").read_bytes() == b"data"
