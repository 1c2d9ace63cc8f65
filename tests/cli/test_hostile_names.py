"""Names with terminal escapes, newlines and bytes that are not UTF-8: printed
escaped by every command, exact in valid JSON; names a restore cannot use end
the command with one line and exit 1, never an internal error (issue #10)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from strongroom.model.point import RecoveryPoint, now
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.hostile import dir_wire, file_wire, put_tree, save_files_point, wire

ESCAPE = "\x1b]0;pwned\x07\x1b[2J"
EVIL = ESCAPE.encode() + b"evil\nforged line"
LATIN1 = b"caf\xe9"


def _no_control(text: str) -> None:
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text), text


@pytest.fixture
def evil_src(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / os.fsdecode(EVIL)).write_bytes(b"x")
    (src / os.fsdecode(LATIN1)).write_bytes(b"y")
    os.symlink(os.fsdecode(EVIL), src / "link")
    result = cli("backup", str(src))
    assert result.rc == 0, result.err
    return src


def test_ls_escapes_control_characters_and_newlines(cli: CliRunner, evil_src: Path) -> None:
    for args in (["ls", "latest", str(evil_src)], ["ls", "-l", "latest", str(evil_src)]):
        result = cli(*args)
        assert result.rc == 0, result.err
        _no_control(result.out)
        assert "\\x1b]0;pwned\\x07\\x1b[2Jevil\\x0aforged line" in result.out
        assert "caf\\xe9" in result.out
        assert not any(line.startswith("forged line") for line in result.out.splitlines())


def test_ls_json_is_valid_and_exact(cli: CliRunner, evil_src: Path) -> None:
    result = cli("ls", "--json", "latest", str(evil_src))
    assert result.rc == 0, result.err
    docs = [json.loads(line) for line in result.out.splitlines()]  # every line valid JSON
    paths = {d["path"] for d in docs}
    assert f"{evil_src}/{EVIL.decode()}" in paths
    assert f"{evil_src}/caf\\xe9" in paths
    link = next(d for d in docs if d["path"].endswith("/link"))
    assert link["link_target"] == EVIL.decode()


def test_diff_escapes_names(cli: CliRunner, evil_src: Path) -> None:
    (evil_src / os.fsdecode(EVIL)).write_bytes(b"changed")
    assert cli("backup", str(evil_src)).rc == 0
    points = cli("snapshots", "--json").json()
    result = cli("diff", points[0]["id"], points[1]["id"])
    assert result.rc == 0, result.err
    _no_control(result.out)
    assert "\\x1b]0;pwned" in result.out


def test_restore_warnings_escape_names(tmp_path: Path, cli: CliRunner, evil_src: Path) -> None:
    target = tmp_path / "t"
    in_the_way = target / str(evil_src).lstrip("/") / os.fsdecode(EVIL)
    in_the_way.mkdir(parents=True)
    (in_the_way / "keep").write_bytes(b"")
    result = cli("restore", "latest", "--target", str(target), "-v")
    assert result.rc == 0, result.err  # the directory in the way is replaced (restic 0.17)
    _no_control(result.out)
    assert "\\x1b]0;pwned" in result.out and "updated" in result.out


def test_snapshots_escape_hosts_tags_and_paths(cli: CliRunner, initialized_repo: Path) -> None:
    repo = open_local_repository(initialized_repo)
    try:
        root = put_tree(repo, [])
        repo.flush()
        point = RecoveryPoint(
            kind="files",
            time=now(),
            host=f"host{ESCAPE}",
            user="u",
            paths=[f"/p{ESCAPE}\nforged"],
            tree=root.hex(),
            tags=[f"t{ESCAPE}"],
        )
        repo.save_point(point.to_doc())
    finally:
        repo.close()
    result = cli("snapshots")
    assert result.rc == 0, result.err
    _no_control(result.out)
    assert "host\\x1b]0;pwned" in result.out and "forged" in result.out
    doc = cli("snapshots", "--json").json()
    assert doc[0]["host"] == f"host{ESCAPE}"


def _hostile_point(initialized_repo: Path, nodes: list[dict]) -> str:  # type: ignore[type-arg]
    repo = open_local_repository(initialized_repo)
    try:
        return save_files_point(repo, put_tree(repo, nodes)).id
    finally:
        repo.close()


@pytest.mark.parametrize("name", [b"..", b"x\0y", b"../x", b"/etc/cron.d/x"])
def test_restore_and_ls_of_an_impossible_name_fail_with_one_line(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, name: bytes
) -> None:
    repo = open_local_repository(initialized_repo)
    try:
        sub = dir_wire(repo, name, [file_wire(repo, b"x", b"attack\n")], m=0o777)
        point = save_files_point(repo, put_tree(repo, [sub])).id
    finally:
        repo.close()
    target = tmp_path / "world" / "target"
    target.mkdir(parents=True)
    for args in (["restore", point, "--target", str(target)], ["ls", point]):
        result = cli(*args)
        assert result.rc == 1, result.err
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("strongroom: error: ")
        assert "tree is damaged" in lines[0] and "internal error" not in lines[0]
    assert os.listdir(tmp_path / "world") == ["target"] and os.listdir(target) == []


def test_restore_of_a_lying_size_exits_1(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    repo = open_local_repository(initialized_repo)
    try:
        data = os.urandom(1 << 20)
        node = file_wire(repo, b"small", data)
        node.update(sz=100, cs=[100])
        point = save_files_point(repo, put_tree(repo, [node, wire(b"z", "p")])).id
    finally:
        repo.close()
    result = cli("restore", point, "--target", str(tmp_path / "t"))
    assert result.rc == 1
    assert "damaged" in result.err and "/small" in result.err
    assert os.path.getsize(tmp_path / "t" / "small") == 100
