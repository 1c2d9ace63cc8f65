"""`strongroom find` across points (issue #17), checked against a plain walk."""

from __future__ import annotations

import os
from pathlib import Path

from strongroom.services.find import FindRequest, find_files
from strongroom.services.points import list_points
from strongroom.services.walk import iter_tree
from strongroom.sources.exclude import Excluder
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.tree import write_file


def _points(tmp_path: Path, cli: CliRunner) -> tuple[Path, list[str]]:
    """Three points of one tree as it changes, one of another tree and host."""
    src = tmp_path / "src"
    for rel in ("etc/app.conf", "etc/sub/deep.CONF", "home/u/notes.txt", "home/u/app.conf.bak"):
        write_file(src / rel, rel.encode())
    ids = [cli("backup", str(src), "--json").summary()["point_id"]]
    write_file(src / "etc/sub/new.conf", b"new")
    os.utime(src / "etc/sub/new.conf", (1_700_000_000, 1_700_000_000))
    ids.append(cli("backup", str(src), "--json").summary()["point_id"])
    (src / "etc/app.conf").unlink()
    ids.append(cli("backup", str(src), "--json").summary()["point_id"])
    other = tmp_path / "other"
    write_file(other / "x.conf", b"x")
    ids.append(cli("backup", str(other), "--host", "web", "--json").summary()["point_id"])
    return src, ids


def _hits(doc: list[dict[str, object]]) -> dict[str, set[str]]:
    return {str(d["point"]): {str(m["path"]) for m in d["matches"]} for d in doc}  # type: ignore[attr-defined]


def test_find_by_name_path_case_time_and_point(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src, ids = _points(tmp_path, cli)
    s = str(src)
    by_name = _hits(cli("find", "*.conf", "--json").json())
    assert by_name == {
        ids[0]: {f"{s}/etc/app.conf"},
        ids[1]: {f"{s}/etc/app.conf", f"{s}/etc/sub/new.conf"},
        ids[2]: {f"{s}/etc/sub/new.conf"},
        ids[3]: {f"{tmp_path}/other/x.conf"},
    }
    nocase = _hits(cli("find", "-i", "*.conf", "--host", "vm-does-not-exist", "--json").json())
    assert nocase == {}
    nocase = _hits(cli("find", "--ignore-case", "deep.conf", "--json").json())
    assert set(nocase) == set(ids[:3])
    deep = _hits(cli("find", f"{s}/etc/**/*.conf", "--json").json())
    assert deep == {ids[1]: {f"{s}/etc/sub/new.conf"}, ids[2]: {f"{s}/etc/sub/new.conf"}}
    assert _hits(cli("find", "*.conf", "--host", "web", "--json").json()) == {
        ids[3]: {f"{tmp_path}/other/x.conf"}
    }
    one = _hits(cli("find", "*.conf", "--point", ids[1][:8], "--json").json())
    assert set(one) == {ids[1]}
    old = _hits(cli("find", "*.conf", "--newest", "2023-11-15", "--json").json())
    assert old == {ids[1]: {f"{s}/etc/sub/new.conf"}, ids[2]: {f"{s}/etc/sub/new.conf"}}
    text = cli("find", "notes.txt")
    assert text.rc == 0
    assert f"found in point {ids[0][:8]}" in text.out and f"{s}/home/u/notes.txt" in text.out
    assert "3 matches" in text.err
    bad = cli("find", "*.conf", "--oldest", "yesterday")
    assert bad.rc == 2 and "is not a date" in bad.err
    assert cli("find").rc == 2


def test_shared_subtrees_give_what_a_plain_walk_gives(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """The search reuses a subtree's matches across points: the result must equal
    walking every point's whole tree."""
    _points(tmp_path, cli)
    repo = open_local_repository(initialized_repo)
    try:
        for patterns in (["*.conf"], ["*"], ["/**/sub"], ["u", "*.txt"]):
            found = {
                m.point.id: m.matches for m in find_files(repo, FindRequest(patterns=patterns))
            }
            matcher = Excluder(patterns)
            expected = {}
            for p in list_points(repo):
                walk = [
                    (path, node)
                    for path, node in iter_tree(repo, bytes.fromhex(p.tree))
                    if matcher.excluded(path, node.name)
                ]
                if walk:
                    expected[p.id] = walk
            assert {k: [(p, n.name) for p, n in v] for k, v in found.items()} == {
                k: [(p, n.name) for p, n in v] for k, v in expected.items()
            }, patterns
    finally:
        repo.close()


def test_latest_is_scoped_by_host_path_and_tag_and_named(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """`latest` of ls/diff/dump takes --host/--path/--tag and says which point it used."""
    src, ids = _points(tmp_path, cli)
    listed = cli("ls", "latest", "--host", "vm-none")
    assert listed.rc != 0
    web = cli("ls", "latest", "--host", "web")
    assert web.rc == 0 and f"using point {ids[3][:8]} of host web" in web.err
    assert f"{tmp_path}/other/x.conf" in web.out
    mine = cli("ls", "latest", "--path", str(src))
    assert f"using point {ids[2][:8]}" in mine.err and f"{src}/etc/sub/new.conf" in mine.out
    dumped = cli("dump", "latest", f"{src}/home/u/notes.txt", "--path", str(src))
    assert dumped.out == "home/u/notes.txt" and f"using point {ids[2][:8]}" in dumped.err
    diff = cli("diff", ids[0][:8], "latest", "--path", str(src))
    assert diff.rc == 0 and f"using point {ids[2][:8]}" in diff.err


def test_restore_latest_is_scoped_and_named(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    _, ids = _points(tmp_path, cli)
    target = tmp_path / "restored"
    done = cli("restore", "latest", "--host", "web", "--target", str(target))
    assert done.rc == 0, done.err
    assert f"using point {ids[3][:8]} of host web" in done.err
    assert (target / str(tmp_path / "other" / "x.conf").lstrip("/")).read_bytes() == b"x"
    plain = cli("restore", "latest", "--target", str(tmp_path / "again"))
    assert f"restored point {ids[3][:8]} of host web, {tmp_path}/other, " in plain.out


def test_find_inside_image_points_with_images(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """An ext4 image point is searched with --images (its file system's entries, with
    their sizes); without it, the image point is named as not searched; a disk with no
    file system is reported and the search goes on."""
    from tests.helpers.golden_images import ext4_image

    tree = tmp_path / "tree"
    write_file(tree / "etc/nginx/nginx.conf", b"worker_processes 2;\n")
    write_file(tree / "srv/app.conf", b"x" * 5000)
    image = ext4_image(tree, tmp_path / "disk.img", 16 << 20)
    image_id = cli("backup", "--image", str(image), "--json").summary()["point_id"]
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    blank_id = cli("backup", "--image", str(blank), "--json").summary()["point_id"]
    files = tmp_path / "files"
    write_file(files / "a.conf", b"a")
    cli("backup", str(files))

    plain = cli("find", "*.conf")
    assert plain.rc == 0, plain.err
    assert "/srv/app.conf" not in plain.out and "a.conf" in plain.out
    assert "2 image points not searched" in plain.err and "--images" in plain.err

    deep = cli("find", "*.conf", "--images", "--json")
    assert deep.rc == 0, deep.err
    docs = {d["point"]: d for d in deep.json()}
    inside = docs[image_id]
    assert inside["filesystem"] == "ext4"
    sizes = {m["path"]: m["size"] for m in inside["matches"]}
    assert sizes == {"/etc/nginx/nginx.conf": 20, "/srv/app.conf": 5000}
    assert blank_id not in docs
    assert f"point {blank_id[:8]} not searched" in deep.err

    text = cli("find", "/etc/**", "--images", "--point", image_id)
    assert "(in its ext4 file system)" in text.out and "/etc/nginx/nginx.conf" in text.out


def test_every_command_taking_a_point_takes_host_path_and_tag() -> None:
    """`latest` is scoped the same way wherever a POINT is given (restic's convention)."""
    import click

    from strongroom.cli.main import cli as root

    ctx = click.Context(root)
    missing = []
    for name in root.list_commands(ctx):  # type: ignore[attr-defined]
        command = root.get_command(ctx, name)  # type: ignore[attr-defined]
        commands = [command]
        if isinstance(command, click.Group):
            commands = [command.get_command(ctx, sub) for sub in command.list_commands(ctx)]
        for cmd in commands:
            args = [p for p in cmd.params if isinstance(p, click.Argument)]
            if not any("POINT" in (p.metavar or p.name or "").upper() for p in args):
                continue
            if cmd.name == "points" and name == "repair":
                continue  # full ids of damaged points; 'latest' means nothing there
            options = {p.name for p in cmd.params if isinstance(p, click.Option)}
            if not {"hosts", "tags", "paths"} <= options:
                missing.append(cmd.name)
    assert missing == []


def test_export_and_serve_take_a_scoped_latest(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    one, two = tmp_path / "one.raw", tmp_path / "two.raw"
    one.write_bytes(os.urandom(1 << 20))
    two.write_bytes(os.urandom(1 << 20))
    first = cli("backup", "--image", str(one), "--json").summary()["point_id"]
    cli("backup", "--image", str(two))
    vhd = tmp_path / "one.vhd"
    done = cli("export", "latest", str(vhd), "--path", str(one), "--type", "fixed")
    assert done.rc == 0, done.err
    assert f"using point {first[:8]}" in done.err
    assert vhd.read_bytes()[: 1 << 20] == one.read_bytes()  # a fixed VHD: the data, then a footer
