"""`restore --scope`, `--lacks-file` and `ls`/`diff`/`dump --scope` through the
real program: exit codes, one-line refusals, the JSON summary, and `ls --scope`
listing exactly what `restore --scope` writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.model.point import RecoveryPoint
from strongroom.services.scope import unescape_line
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import assert_one_line_error
from tests.helpers.compare import rsync_differences, walk
from tests.helpers.seeded import OS, Machine, i, m, seeded_point


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path / "machine")


@pytest.fixture
def point(initialized_repo: Path, machine: Machine) -> RecoveryPoint:
    repo = open_local_repository(initialized_repo)
    try:
        return machine.point(repo)
    finally:
        repo.close()


def _listed(cli: CliRunner, *args: str) -> list[str]:
    result = cli("ls", *args, "--json")
    assert result.rc == 0, result.err
    return [doc["path"] for doc in result.lines()]


@pytest.mark.parametrize("scope", ["user", "os", "app:nginx-light", "app:sqlite3", "full"])
def test_ls_scope_lists_what_restore_scope_writes(
    tmp_path: Path, cli: CliRunner, point: RecoveryPoint, scope: str
) -> None:
    target = tmp_path / "out"
    result = cli("restore", point.id, "--target", str(target), "--scope", scope, "--json")
    assert result.rc == 0, result.err
    written = sorted("/" + rel.decode() for rel, _, _ in walk(target))
    written = [p for p in written if p != "/.strongroom-lacks"]
    assert sorted(_listed(cli, point.id, "--scope", scope)) == written
    summary = result.summary()
    assert summary["scope"] == scope
    files = [
        p for p in written if not os.path.isdir(str(target) + p) or os.path.islink(str(target) + p)
    ]
    assert sum(summary["classes"].values()) == len(files)


def test_user_restore_json_summary_and_lacks_file(
    tmp_path: Path, cli: CliRunner, machine: Machine, point: RecoveryPoint
) -> None:
    target = tmp_path / "out"
    result = cli("restore", point.id, "-t", str(target), "--scope", "user", "--json")
    assert result.rc == 0, result.err
    summary = result.summary()
    base = str(machine.root.resolve())
    want = sorted(base + "/" + p.decode() for _, p in machine.lacks)
    assert summary["lacks"] == want  # exactly, the newline included
    assert summary["lacks_count"] == 3
    assert summary["lacks_file"] == str(target / ".strongroom-lacks")
    assert summary["classes"] == {"own": 9, "modified": 4, "moved": 1}
    lines = (target / ".strongroom-lacks").read_bytes().splitlines()
    assert len(lines) == 3 and [unescape_line(x).decode() for x in lines] == want
    assert b"etc/weird\\nname\\\\x" in lines[0]
    text = cli("restore", point.id, "-t", str(tmp_path / "o2"), "--scope", "user")
    assert text.rc == 0, text.err
    assert "by class: 9 own, 4 modified, 1 moved, 0 identical" in text.out
    assert (
        f"3 seed files the machine lacks, listed in {tmp_path / 'o2'}/.strongroom-lacks" in text.out
    )


def test_lacks_file_option(tmp_path: Path, cli: CliRunner, point: RecoveryPoint) -> None:
    elsewhere = tmp_path / "lists" / "lacks.txt"
    elsewhere.parent.mkdir()
    result = cli(
        "restore",
        point.id,
        "-t",
        str(tmp_path / "out"),
        "--scope",
        "user",
        "--lacks-file",
        str(elsewhere),
    )
    assert result.rc == 0, result.err
    assert len(elsewhere.read_bytes().splitlines()) == 3
    assert not (tmp_path / "out/.strongroom-lacks").exists()
    refused = cli(
        "restore",
        point.id,
        "-t",
        str(tmp_path / "o2"),
        "--scope",
        "os",
        "--lacks-file",
        str(elsewhere),
    )
    assert refused.rc == 2
    assert_one_line_error(refused, "--lacks-file goes with --scope user")
    assert not (tmp_path / "o2").exists()


def test_full_scope_is_the_machine(
    tmp_path: Path, cli: CliRunner, machine: Machine, point: RecoveryPoint
) -> None:
    result = cli("restore", point.id, "-t", str(tmp_path / "out"), "--scope", "full")
    assert result.rc == 0, result.err
    assert (
        rsync_differences(machine.root, tmp_path / "out" / str(machine.root.resolve()).lstrip("/"))
        == []
    )


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ("--scope", "app:nope"),
            ("does not build on seed nope", "debian (os), nginx-light (app), sqlite3 (app)"),
        ),
        (("--scope", "everything"), ("is not a scope",)),
        (("--scope", "app:../x"), ("is not a seed name",)),
    ],
)
def test_refusals_write_nothing(
    tmp_path: Path,
    cli: CliRunner,
    point: RecoveryPoint,
    args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    for command in (
        ["restore", point.id, "-t", str(tmp_path / "out")],
        ["ls", point.id],
        ["dump", point.id, "/x"],
    ):
        result = cli(*command, *args)
        assert result.rc == 2, (command, result.err)
        assert_one_line_error(result, *needles, only=True)
    assert not (tmp_path / "out").exists()


def test_ls_long_and_json_show_classes(
    cli: CliRunner, machine: Machine, point: RecoveryPoint
) -> None:
    base = str(machine.root.resolve())
    docs = {d["path"][len(base) :]: d for d in cli("ls", point.id, base, "--json").lines()}
    assert (docs["/srv/old.conf"]["class"], docs["/srv/old.conf"]["seeds"]) == ("moved", ["debian"])
    assert docs["/srv/old.conf"]["seed_path"] == "etc/old.conf"
    assert (docs["/usr/lib/libc.so"]["class"], docs["/usr/lib/libc.so"]["seeds"]) == (
        "identical",
        ["debian", "sqlite3"],
    )
    assert (docs["/etc/hostname"]["class"], docs["/home/ann"]["class"]) == ("modified", "own")
    assert docs["/home/ann"]["seeds"] == [] and "seed_path" not in docs["/etc/hostname"]
    long_ = cli("ls", "-l", point.id, base + "/etc", "--no-recursive")
    assert long_.rc == 0, long_.err
    rows = {line.split()[-1][len(base) :]: line.split()[-2] for line in long_.out.splitlines()}
    assert rows == {
        "/etc": "identical",
        "/etc/hl-first": "identical",
        "/etc/hostname": "modified",
        "/etc/nginx": "identical",
        "/etc/passwd": "identical",
    }


def test_ls_scope_under_a_path(cli: CliRunner, machine: Machine, point: RecoveryPoint) -> None:
    base = str(machine.root.resolve())
    listed = _listed(cli, point.id, base + "/usr", "--scope", "user", "--no-recursive")
    assert [p[len(base) :] for p in listed] == ["/usr", "/usr/bin", "/usr/local-tool", "/usr/share"]


def test_dump_scope(cli: CliRunner, machine: Machine, point: RecoveryPoint) -> None:
    base = str(machine.root.resolve())
    ok = cli("dump", point.id, base + "/usr/bin/sqlite3", "--scope", "app:sqlite3", binary=True)
    assert ok.rc == 0 and ok.out == (machine.root / "usr/bin/sqlite3").read_bytes()
    out = cli("dump", point.id, base + "/usr/bin/ls", "--scope", "user", binary=True)
    assert out.rc == 1 and out.out == b""
    assert_one_line_error(out, "outside --scope user", "identical", only=True)


def test_diff_scope(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, machine: Machine, point: RecoveryPoint
) -> None:
    (machine.root / "home/ann/new.txt").write_bytes(b"new")
    (machine.root / "usr/bin/ls").write_bytes(b"patched ls")
    repo = open_local_repository(initialized_repo)
    try:
        origins = {**machine.origins, "usr/bin/ls": m(OS)}
        later = seeded_point(repo, machine.root, machine.used, origins, machine.lacks)
    finally:
        repo.close()
    base = str(machine.root.resolve())
    user = cli("diff", point.id, later.id, "--scope", "user", "--metadata", "--json")
    assert user.rc == 0, user.err
    changes = {
        (d["modifier"], d["path"][len(base) :])
        for d in user.lines()
        if d["message_type"] == "change" and d["path"].startswith(base + "/")
    }
    assert changes == {("+", "/home/ann/new.txt"), ("U", "/home/ann"), ("+", "/usr/bin/ls")}
    os_ = cli("diff", point.id, later.id, "--scope", "os", "--json")
    changes = {
        (d["modifier"], d["path"][len(base) :])
        for d in os_.lines()
        if d["message_type"] == "change" and d["path"].startswith(base + "/")
    }
    assert changes == {("M", "/usr/bin/ls")}
    refused = cli("diff", point.id, later.id, "--scope", "app:nope")
    assert refused.rc == 2
    assert_one_line_error(refused, "does not build on seed nope")


def test_unseeded_point(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = tmp_path / "plain"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    backed = cli("backup", str(src), "--json")
    assert backed.rc == 0, backed.err
    pid = backed.summary()["point_id"]
    user = cli("restore", pid, "-t", str(tmp_path / "out"), "--scope", "user")
    assert user.rc == 0, user.err
    assert "was not made against seeds" in user.err and "Traceback" not in user.err
    assert (tmp_path / "out" / str(src).lstrip("/") / "f").read_bytes() == b"x"
    app = cli("restore", pid, "-t", str(tmp_path / "o2"), "--scope", "app:x")
    assert app.rc == 2 and not (tmp_path / "o2").exists()
    assert_one_line_error(app, "was not made against seeds", only=True)
    assert "class" not in cli("ls", pid, "--json").lines()[0]


def test_image_points_refuse_scopes(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(64 * 1024) * 16)
    backed = cli("backup", "--image", str(disk), "--json")
    assert backed.rc == 0, backed.err
    pid = backed.summary()["point_id"]
    for command in (["ls", pid], ["dump", pid, "/x"], ["diff", pid, pid]):
        result = cli(*command, "--scope", "user")
        assert result.rc == 2, (command, result.err)
        assert_one_line_error(result, "image point", only=True)


def test_hostile_lacks_through_the_cli(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, machine: Machine
) -> None:
    from strongroom.model.origin import encode_lacks

    repo = open_local_repository(initialized_repo)
    try:
        bad = seeded_point(
            repo,
            machine.root,
            machine.used,
            machine.origins,
            lacks_blob=encode_lacks([(OS, b"../../etc/shadow")]),
            lacks_count=1,
        )
    finally:
        repo.close()
    result = cli("restore", bad.id, "-t", str(tmp_path / "out"), "--scope", "user")
    assert result.rc == 1
    assert_one_line_error(result, "lacking seed files", only=True)
    assert not (tmp_path / "out").exists()
    full = cli("restore", bad.id, "-t", str(tmp_path / "out"))  # full reads no lacks list
    assert full.rc == 0, full.err


def test_lacks_file_in_a_missing_folder_writes_nothing(
    tmp_path: Path, cli: CliRunner, point: RecoveryPoint
) -> None:
    missing = tmp_path / "nope" / "lacks.txt"
    result = cli(
        "restore",
        point.id,
        "-t",
        str(tmp_path / "out"),
        "--scope",
        "user",
        "--lacks-file",
        str(missing),
    )
    assert result.rc == 2
    assert_one_line_error(result, "no such folder", only=True)
    assert not (tmp_path / "out").exists()


def test_origin_naming_an_unused_seed_through_the_cli(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, machine: Machine
) -> None:
    machine.origins["srv/old.conf"] = i(5)
    repo = open_local_repository(initialized_repo)
    try:
        bad = machine.point(repo)
    finally:
        repo.close()
    for command in (
        ["restore", bad.id, "-t", str(tmp_path / "out"), "--scope", "user"],
        ["ls", bad.id, "--json"],
        ["ls", bad.id, "--scope", "user"],
        ["dump", bad.id, str(machine.root.resolve() / "srv/old.conf"), "--scope", "user"],
    ):
        result = cli(*command)
        assert result.rc == 1, (command, result.err)
        assert_one_line_error(result, "names a seed the point does not build on", only=True)
    restored = {p.name for p in (tmp_path / "out").iterdir()}
    assert restored == {tmp_path.parts[1]}  # inside the target only, and no lacks list
