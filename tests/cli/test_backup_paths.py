"""Paths on the backup's command line (issue #17): a missing one among several is
reported and the rest backed up (exit 3); a symlink to a folder is followed and
the message says so; none usable is an error."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.tree import write_file


def test_missing_among_several_and_symlinked_folders(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    write_file(tmp_path / "here" / "a.txt", b"a")
    write_file(tmp_path / "real" / "b.txt", b"b")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    result = cli("backup", str(tmp_path / "here"), str(tmp_path / "gone"), str(tmp_path / "link"))
    assert result.rc == 3, result
    assert f"{tmp_path / 'gone'}: no such file or directory" in result.err
    assert f"{tmp_path / 'link'} is a symbolic link to the folder {tmp_path / 'real'}" in result.err
    (point,) = cli("snapshots", "--json").json()
    assert sorted(point["paths"]) == [str(tmp_path / "here"), str(tmp_path / "real")]
    target = tmp_path / "restored"
    assert cli("restore", "latest", "--target", str(target)).rc == 0
    assert (target / str(tmp_path / "real" / "b.txt").lstrip("/")).read_bytes() == b"b"

    none = cli("backup", str(tmp_path / "gone"), str(tmp_path / "also-gone"))
    assert none.rc != 0 and none.rc != 3
    assert_one_line_error(none, "no such file or directory")
