"""backup options: excludes, dry runs, tags and hosts, parents, several paths, file systems."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner
from tests.helpers.marks import needs_root
from tests.helpers.tree import write_file


def listed(cli: CliRunner, point: str = "latest", path: str = "/") -> set[str]:
    result = cli("ls", point, path)
    assert result.rc == 0, result.err
    return set(result.out.splitlines())


def test_exclude_patterns(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = tmp_path / "src"
    rels = ["keep.txt", "drop.tmp", "sub/drop.tmp", "sub/keep.md", "node_modules/x/y.js"]
    rels += ["sub/node_modules/z.js", "cache/big", "sub/cache/small", "a/b/c/deep.log"]
    for rel in rels:
        write_file(src / rel, rel.encode())
    result = cli(
        "backup", str(src), "--json",
        "--exclude", "*.tmp", "--exclude", "node_modules",
        "--exclude", f"{src}/cache", "-e", f"{src}/**/*.log",
    )  # fmt: skip
    assert result.rc == 0, result.err
    names = {p[len(str(src)) + 1 :] for p in listed(cli) if p.startswith(f"{src}/")}
    assert names == {"keep.txt", "sub", "sub/keep.md", "sub/cache", "sub/cache/small", "a",
                     "a/b", "a/b/c"}  # fmt: skip
    assert result.summary()["total_files"] == 3


def test_exclude_file_and_config_excludes(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    for rel in ("a.txt", "b.bak", "c.log", "d.swp"):
        write_file(src / rel, b"x")
    patterns = tmp_path / "excludes"
    patterns.write_text("# editor leftovers\n*.swp\n\n*.bak\n")
    config = tmp_path / "config.toml"
    config.write_text('exclude = ["*.log"]\n')
    result = cli(
        "backup", str(src), "--exclude-file", str(patterns),
        env={"STRONGROOM_CONFIG": str(config)},
    )  # fmt: skip
    assert result.rc == 0, result.err
    assert {p for p in listed(cli) if p.startswith(f"{src}/")} == {f"{src}/a.txt"}


def test_the_paths_themselves_are_never_excluded(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "data.tmp"
    write_file(src / "inner.txt", b"x")
    assert cli("backup", str(src), "--exclude", "*.tmp").rc == 0
    assert f"{src}/inner.txt" in listed(cli)


def test_dry_run_writes_nothing(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = tmp_path / "src"
    write_file(src / "a.bin", os.urandom(3 * 1024 * 1024))
    write_file(src / "b.txt", b"hello")
    before = sorted(p.relative_to(initialized_repo) for p in initialized_repo.rglob("*"))
    result = cli("backup", str(src), "--dry-run", "--json")
    assert result.rc == 0, result.err
    summary = result.summary()
    assert summary["dry_run"] is True and summary["point_id"] is None
    assert summary["data_added"] >= 3 * 1024 * 1024  # what would be added
    after = sorted(p.relative_to(initialized_repo) for p in initialized_repo.rglob("*"))
    assert [p for p in after if p.parts[0] in ("data", "index", "points")] == [
        p for p in before if p.parts[0] in ("data", "index", "points")
    ]
    assert not list((initialized_repo / "data").rglob("*"))
    text = cli("backup", str(src), "-n")
    assert text.rc == 0 and "dry run: nothing was written" in text.out


def test_tags_host_and_parent_selection(
    tmp_path: Path, cli: CliRunner, backed_up: BackedUp
) -> None:
    src = backed_up.src
    other = cli("backup", str(src), "--host", "otherhost", "--tag", "x", "--json").summary()
    # Another host's points are no parent of ours (and have none themselves).
    assert other["parent"] is None and other["files_unmodified"] == 0
    mine = cli("backup", str(src), "--json").summary()
    assert mine["parent"] == backed_up.point_id
    explicit = cli("backup", str(src), "--parent", other["point_id"][:8], "--json").summary()
    assert explicit["parent"] == other["point_id"]
    forced = cli("backup", str(src), "--force", "--json").summary()
    assert forced["parent"] is None
    assert forced["bytes_read"] == forced["total_bytes"] > 0
    assert forced["data_added"] < 64 * 1024  # read again, but nothing new stored
    points = cli("snapshots", "--json", "--host", "otherhost").json()
    assert [(p["id"], p["tags"]) for p in points] == [(other["point_id"], ["x"])]


def test_several_paths_and_relative_paths(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    for name in ("one", "two"):
        write_file(tmp_path / name / "f.txt", name.encode())
    result = cli("backup", "one", str(tmp_path / "two"), "--json", cwd=tmp_path)
    assert result.rc == 0, result.err
    (point,) = cli("snapshots", "--json").json()
    assert point["paths"] == [str(tmp_path / "one"), str(tmp_path / "two")]
    paths = listed(cli)
    assert {f"{tmp_path}/one/f.txt", f"{tmp_path}/two/f.txt"} <= paths
    assert f"{tmp_path}/home" not in paths  # siblings of the backed-up paths are not included


def test_repository_inside_the_tree_is_skipped(tmp_path: Path, cli: CliRunner) -> None:
    src = tmp_path / "src"
    write_file(src / "doc.txt", b"x")
    repo = src / "backups" / "repo"
    assert cli("init", env={"STRONGROOM_REPO": str(repo)}).rc == 0
    env = {"STRONGROOM_REPO": str(repo)}
    result = cli("backup", str(src), "--json", env=env)
    assert result.rc == 0, result.err
    paths = set(cli("ls", "latest", str(src), env=env).out.splitlines())
    assert f"{src}/backups/repo" in paths  # as an empty directory
    assert not any(p.startswith(f"{repo}/") for p in paths)


@pytest.mark.root
@needs_root
def test_one_file_system(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = tmp_path / "src"
    write_file(src / "here.txt", b"x")
    mnt = src / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        write_file(mnt / "elsewhere.txt", b"on another file system")
        assert cli("backup", str(src)).rc == 0
        assert f"{mnt}/elsewhere.txt" in listed(cli)
        assert cli("backup", str(src), "--one-file-system").rc == 0
        paths = listed(cli)
        assert f"{mnt}" in paths and f"{src}/here.txt" in paths
        assert f"{mnt}/elsewhere.txt" not in paths
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_default_repository_is_created_on_first_use(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    from tests.helpers.cli import run_cli

    env = {k: v for k, v in cli_env.items() if k != "STRONGROOM_REPO"}
    write_file(tmp_path / "src" / "f", b"x")
    result = run_cli(["backup", str(tmp_path / "src")], env)
    assert result.rc == 0, result.err
    default = Path(env["XDG_DATA_HOME"]) / "strongroom" / "repository"
    assert (default / "config").is_file()
    assert "creating the default one" in result.err
    assert run_cli(["snapshots", "--json"], env).rc == 0


def test_malformed_exclude_pattern_is_a_usage_error(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    result = cli("backup", str(tmp_path / "home"), "--exclude", "[z-a]")
    assert result.rc == 2
    assert "[z-a]" in result.err and "internal error" not in result.err


def test_refused_options_create_no_default_repository(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Options are checked (services/backup.py) before the default repository is
    created: a refused command leaves nothing behind."""
    from tests.helpers.cli import run_cli

    env = {k: v for k, v in cli_env.items() if k != "STRONGROOM_REPO"}
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 16))
    result = run_cli(["backup", "--image", str(disk), "--dry-run"], env)
    assert result.rc == 2
    assert "--dry-run is not available with --image" in result.err
    assert not (Path(env["XDG_DATA_HOME"]) / "strongroom" / "repository").exists()
