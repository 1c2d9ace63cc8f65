"""restore: targets, --include, and what is in the way."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner
from tests.helpers.compare import walk_differences


def files_below(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def test_restore_recreates_the_absolute_path_below_the_target(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    target = tmp_path / "t"
    result = cli("restore", "latest", "--target", str(target))
    assert result.rc == 0, result.err
    restored = target / str(backed_up.src).lstrip("/")
    assert walk_differences(backed_up.src, restored, check_atime=False) == []
    said = f"restored point {backed_up.point_id[:8]} of host "
    assert (
        said in result.out and f"{backed_up.src}, " in result.out and f" to {target}" in result.out
    )


def test_include_restores_only_that_subtree(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    target = tmp_path / "t"
    sub = backed_up.src / "sub"
    result = cli("restore", "latest", "--target", str(target), "--include", str(sub))
    assert result.rc == 0, result.err
    restored = target / str(backed_up.src).lstrip("/")
    assert files_below(restored) == {"sub/b.bin", "sub/deeper/c.txt", "sub/deeper/d.bin"}
    assert walk_differences(sub, restored / "sub", check_atime=False) == []
    # The directories on the way exist (with their metadata), their other entries do not.
    assert not (restored / "other").exists() and not (restored / "emptydir").exists()
    assert os.stat(restored).st_mode == os.stat(backed_up.src).st_mode


def test_include_a_file_and_several_paths(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    src = backed_up.src
    target = tmp_path / "t"
    result = cli(
        "restore", "latest", "--target", str(target),
        "--include", str(src / "a.txt"), "--include", f"{src}/sub/deeper/",
    )  # fmt: skip
    assert result.rc == 0, result.err
    restored = target / str(src).lstrip("/")
    assert files_below(restored) == {"a.txt", "sub/deeper/c.txt", "sub/deeper/d.bin"}
    assert (restored / "a.txt").read_bytes() == backed_up.files["a.txt"]


def test_include_not_in_the_point(tmp_path: Path, cli: CliRunner, backed_up: BackedUp) -> None:
    target = tmp_path / "t"
    result = cli("restore", "latest", "--target", str(target), "--include", "/not/there")
    assert result.rc == 1
    assert "/not/there" in result.err and "Traceback" not in result.err
    assert not target.exists() or not any(target.iterdir())


def test_restore_over_existing_files_replaces_them(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    target = tmp_path / "t"
    restored = target / str(backed_up.src).lstrip("/")
    (restored / "sub").mkdir(parents=True)
    (restored / "a.txt").write_bytes(b"stale content that is longer than the original")
    (restored / "sub" / "b.bin").symlink_to("/etc/passwd")  # must not be followed
    (restored / "extra.txt").write_bytes(b"not in the point")
    result = cli("restore", "latest", "--target", str(target))
    assert result.rc == 0, result.err
    assert (restored / "a.txt").read_bytes() == backed_up.files["a.txt"]
    assert not (restored / "sub" / "b.bin").is_symlink()
    assert (restored / "sub" / "b.bin").read_bytes() == backed_up.files["sub/b.bin"]
    assert (restored / "extra.txt").exists()  # restore adds and replaces, never deletes


def test_directory_in_the_way_of_a_file_is_replaced_unless_never(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    """A directory where the point has a file: kept with --overwrite never (the
    file is not restored, no warning), replaced by default (restic 0.17)."""
    target = tmp_path / "t"
    restored = target / str(backed_up.src).lstrip("/")
    (restored / "a.txt").mkdir(parents=True)
    (restored / "a.txt" / "keep").write_bytes(b"mine")
    result = cli("restore", "latest", "--target", str(target), "--overwrite", "never", "--json")
    assert result.rc == 0, result.err
    assert result.summary()["unchanged"] == 1
    assert (restored / "a.txt" / "keep").read_bytes() == b"mine"  # not destroyed
    assert (restored / "sub" / "b.bin").read_bytes() == backed_up.files["sub/b.bin"]
    result = cli("restore", "latest", "--target", str(target), "--json")
    assert result.rc == 0, result.err
    assert (restored / "a.txt").read_bytes() == backed_up.files["a.txt"]


def test_restore_an_older_point(tmp_path: Path, cli: CliRunner, backed_up: BackedUp) -> None:
    original = backed_up.files["a.txt"]
    (backed_up.src / "a.txt").write_bytes(b"newer\n")
    assert cli("backup", str(backed_up.src)).rc == 0
    target = tmp_path / "t"
    assert cli("restore", backed_up.point_id[:10], "--target", str(target)).rc == 0
    assert (target / str(backed_up.src).lstrip("/") / "a.txt").read_bytes() == original
    latest = tmp_path / "latest"
    assert cli("restore", "latest", "--target", str(latest)).rc == 0
    assert (latest / str(backed_up.src).lstrip("/") / "a.txt").read_bytes() == b"newer\n"


def test_restore_never_follows_symlinks_in_the_target(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    """A symlink where the point has a directory is replaced, not followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    restored = target / str(backed_up.src).lstrip("/")
    restored.mkdir(parents=True)
    (restored / "sub").symlink_to(outside)
    result = cli("restore", "latest", "--target", str(target))
    assert result.rc == 0, result.err
    assert list(outside.iterdir()) == []
    assert (restored / "sub").is_dir() and not (restored / "sub").is_symlink()
    assert (restored / "sub" / "b.bin").read_bytes() == backed_up.files["sub/b.bin"]


def test_include_and_dump_with_non_utf8_names(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = os.fsencode(tmp_path / "src")
    os.makedirs(os.path.join(src, b"dir\xff"))
    with open(os.path.join(src, b"dir\xff", b"f\xfe"), "wb") as f:
        f.write(b"bytes names\n")
    os.makedirs(os.path.join(src, b"other"))
    assert cli("backup", os.fsdecode(src)).rc == 0
    include = os.fsdecode(os.path.join(src, b"dir\xff"))
    target = tmp_path / "t"
    result = cli("restore", "latest", "--target", str(target), "--include", include)
    assert result.rc == 0, result.err
    root = os.path.join(os.fsencode(target), src.lstrip(b"/"))
    assert sorted(os.listdir(root)) == [b"dir\xff"]
    with open(os.path.join(root, b"dir\xff", b"f\xfe"), "rb") as f:
        assert f.read() == b"bytes names\n"
    dumped = cli(
        "dump", "latest", os.fsdecode(os.path.join(src, b"dir\xff", b"f\xfe")), binary=True
    )
    assert dumped.rc == 0 and dumped.out == b"bytes names\n"


def test_include_paths_are_the_points_paths_normalised(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    """`/a//b/./c` is `/a/b/c`; a relative path or one with `..` is refused in
    one line (they used to be accepted and then match nothing)."""
    target = tmp_path / "t"
    messy = str(backed_up.src).replace("/", "//") + "/./sub/"
    result = cli("restore", "latest", "--target", str(target), "--include", messy)
    assert result.rc == 0, result.err
    restored = target / str(backed_up.src).lstrip("/")
    assert files_below(restored) == {"sub/b.bin", "sub/deeper/c.txt", "sub/deeper/d.bin"}
    for bad in ("sub", str(backed_up.src / "sub" / ".." / "sub")):
        refused = cli("restore", "latest", "--target", str(tmp_path / "u"), "--include", bad)
        assert refused.rc == 2, refused.err
        assert len(refused.err.strip().splitlines()) == 1
        assert not (tmp_path / "u").exists()
