"""restore --delete (what the point lacks goes, nothing outside the target) and
--dry-run (says what restore would do, touches nothing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CliRunner


@pytest.fixture
def setup(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> tuple[Path, Path, Path]:
    """A point of src (a.txt, sub/b.txt, sub/deep/c.txt) restored into t, then
    extras in the target: files, a directory, and symlinks to `outside`."""
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a\n")
    (src / "sub" / "b.txt").write_bytes(b"b\n")
    (src / "sub" / "deep" / "c.txt").write_bytes(b"c\n")
    assert cli("backup", str(src)).rc == 0
    target = tmp_path / "t"
    assert cli("restore", "latest", "--target", str(target)).rc == 0
    restored = target / str(src).lstrip("/")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"not the target's\n")
    (restored / "extra.txt").write_bytes(b"x")
    (restored / "extra-dir" / "inner").mkdir(parents=True)
    (restored / "extra-dir" / "inner" / "f").write_bytes(b"f")
    (restored / "extra-dir" / "inner" / "out").symlink_to(outside)  # rmtree must not follow
    (restored / "sub" / "extra-in-sub").write_bytes(b"y")
    (restored / "sub" / "escape").symlink_to(outside)  # a symlink to a directory outside
    (restored / "sub" / "deep" / "escape-file").symlink_to(outside / "precious")
    (target / "beside-the-point").write_bytes(b"z")  # in the target, above the point's paths
    return src, target, outside


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry below `root` (not following symlinks): mode, mtime, content."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = b""
            if os.path.islink(path):
                data = os.readlink(path).encode()
            elif os.path.isfile(path):
                data = Path(path).read_bytes()
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, data)
    return found


def deleted(out: str) -> set[str]:
    return {line.split(None, 1)[1] for line in out.splitlines() if line.startswith("deleted ")}


def test_delete_removes_what_the_point_lacks_and_nothing_outside(
    tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path, Path]
) -> None:
    src, target, outside = setup
    before_outside = snapshot(outside)
    result = cli("restore", "latest", "--target", str(target), "--delete", "-v")
    assert result.rc == 0, result.err
    restored = target / str(src).lstrip("/")
    assert deleted(result.out) == {
        f"{src}/extra.txt",
        f"{src}/extra-dir",
        f"{src}/sub/extra-in-sub",
        f"{src}/sub/escape",
        f"{src}/sub/deep/escape-file",
        "/beside-the-point",  # no --include: the whole target is the point's
    }
    assert snapshot(outside) == before_outside
    assert sorted(str(p.relative_to(restored)) for p in restored.rglob("*")) == [
        "a.txt",
        "sub",
        "sub/b.txt",
        "sub/deep",
        "sub/deep/c.txt",
    ]
    assert (restored / "sub" / "deep" / "c.txt").read_bytes() == b"c\n"


def test_delete_with_include_stays_below_the_included_path(
    tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path, Path]
) -> None:
    src, target, outside = setup
    before_outside = snapshot(outside)
    include = f"{src}/sub"
    result = cli("restore", "latest", "-t", str(target), "--include", include, "--delete", "--json")
    assert result.rc == 0, result.err
    assert result.summary()["deleted"] == 3
    status = [line for line in result.lines() if line["message_type"] == "status"]
    assert (status[-1]["files_total"], status[-1]["bytes_total"]) == (2, 4)  # sub's files
    restored = target / str(src).lstrip("/")
    assert not (restored / "sub" / "extra-in-sub").exists()
    assert not os.path.lexists(restored / "sub" / "escape")
    assert not os.path.lexists(restored / "sub" / "deep" / "escape-file")
    assert (restored / "extra.txt").exists() and (restored / "extra-dir" / "inner" / "f").exists()
    assert (target / "beside-the-point").exists()
    assert snapshot(outside) == before_outside


def test_dry_run_touches_nothing_and_says_what_it_would_do(
    tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path, Path]
) -> None:
    src, target, outside = setup
    restored = target / str(src).lstrip("/")
    (restored / "a.txt").write_bytes(b"A\n")  # differs: would be updated
    (restored / "sub" / "b.txt").unlink()  # missing: would be restored
    before = snapshot(target), snapshot(outside)
    result = cli("restore", "latest", "-t", str(target), "--delete", "--dry-run", "-vv")
    assert result.rc == 0, result.err
    assert (snapshot(target), snapshot(outside)) == before
    lines = set(result.out.splitlines())
    assert f"updated   {src}/a.txt" in lines
    assert f"restored  {src}/sub/b.txt" in lines
    assert f"unchanged {src}/sub/deep/c.txt" in lines
    assert f"deleted   {src}/extra-dir" in lines
    assert "dry run: nothing written" in result.out
    # into a target that does not exist: everything would be restored, nothing is created
    fresh = tmp_path / "fresh"
    result = cli("restore", "latest", "-t", str(fresh), "--dry-run", "-v", "--json")
    assert result.rc == 0, result.err
    summary = result.summary()
    assert summary["files"] == 3 and summary["dry_run"] is True
    assert summary["bytes_written"] == 6  # what it would write: a, b and c
    assert not fresh.exists()


def test_delete_and_overwrite_go_with_files_points_only(
    cli: CliRunner, setup: tuple[Path, Path, Path]
) -> None:
    _, target, _ = setup
    result = cli("restore", "latest", "-t", str(target), "--delete", "--scope", "user")
    assert result.rc == 2 and "--scope" in result.err
