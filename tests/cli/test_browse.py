"""ls, diff and dump: looking inside points without restoring."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner
from tests.helpers.tree import random_bytes, write_file


def test_ls_lists_every_path(cli: CliRunner, backed_up: BackedUp) -> None:
    result = cli("ls", "latest")
    assert result.rc == 0
    listed = result.out.splitlines()
    src = str(backed_up.src)
    # The directories leading to the source, then the source and everything in it.
    ancestors = [str(p) for p in reversed(backed_up.src.parents) if str(p) != "/"]
    assert listed[: len(ancestors)] == ancestors
    expected = {src, f"{src}/emptydir", f"{src}/sub", f"{src}/sub/deeper", f"{src}/other"}
    expected |= {f"{src}/{rel}" for rel in backed_up.files}
    assert set(listed[len(ancestors) :]) == expected


def test_ls_below_a_path_and_not_recursive(cli: CliRunner, backed_up: BackedUp) -> None:
    src = str(backed_up.src)
    sub = cli("ls", "latest", f"{src}/sub").out.splitlines()
    assert sub == [f"{src}/sub", f"{src}/sub/b.bin", f"{src}/sub/deeper", f"{src}/sub/deeper/c.txt",
                   f"{src}/sub/deeper/d.bin"]  # fmt: skip
    flat = cli("ls", "latest", src, "--no-recursive").out.splitlines()
    assert flat == [src] + [f"{src}/{n}" for n in ("a.txt", "empty", "emptydir", "other", "sub")]


def test_ls_long(cli: CliRunner, backed_up: BackedUp) -> None:
    os.symlink("a.txt", backed_up.src / "link")
    os.chmod(backed_up.src / "a.txt", 0o640)
    cli("backup", str(backed_up.src))
    lines = cli("ls", "-l", "latest", str(backed_up.src), "--no-recursive").out.splitlines()
    by_name = {line.rsplit("/", 1)[-1]: line for line in lines}
    assert by_name["a.txt"].startswith("-rw-r----- ")
    assert " 12 " in by_name["a.txt"]  # the size
    assert by_name["link -> a.txt"].startswith("lrwxrwxrwx")
    assert by_name["sub"].startswith("drwx")


def test_ls_shows_non_utf8_names_escaped(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(os.path.join(os.fsencode(src), b"bad\xffname"), "wb") as f:
        f.write(b"x")
    assert cli("backup", str(src)).rc == 0
    text = cli("ls", "latest", str(src)).out
    assert f"{src}/bad\\xffname" in text.splitlines()
    docs = cli("ls", "latest", str(src), "--json").lines()
    assert docs[1]["path"].endswith("bad\\xffname")  # escaped like the text output


def test_dump_writes_exact_bytes(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = tmp_path / "src"
    files = {
        "empty": b"",
        "tiny": b"\x00",
        "binary.bin": bytes(range(256)) * 10,
        "multi_chunk.bin": random_bytes(9 * 1024 * 1024 + 3, 1),
        "zeros": bytes(5 * 1024 * 1024),
    }
    for name, data in files.items():
        write_file(src / name, data)
    assert cli("backup", str(src)).rc == 0
    for name, data in files.items():
        result = cli("dump", "latest", str(src / name), binary=True)
        assert result.rc == 0 and result.out == data, name
    alias = cli("cat", "latest", str(src / "tiny"), binary=True)
    assert alias.rc == 0 and alias.out == b"\x00"
    directory = cli("dump", "latest", str(src))
    assert directory.rc == 1 and "not a regular file" in directory.err


def test_diff_reports_each_kind_of_change(cli: CliRunner, backed_up: BackedUp) -> None:
    src = backed_up.src
    (src / "a.txt").write_bytes(b"new content\n")  # M
    os.chmod(src / "other" / "e.txt", 0o600)  # U (mode only)
    (src / "sub" / "deeper" / "d.bin").unlink()  # -
    write_file(src / "added" / "new.txt", b"new")  # + and + below it
    shutil.rmtree(src / "emptydir")
    write_file(src / "emptydir", b"now a file")  # T
    second = cli("backup", str(src), "--json").summary()["point_id"]

    result = cli("diff", "--metadata", backed_up.point_id, second)
    assert result.rc == 0
    *lines, _blank, totals = result.out.splitlines()
    # Directories above the backed-up one (/tmp, ...) may change meanwhile
    # through other processes; only what lies inside src is this test's.
    changes = {
        tuple(line.split(maxsplit=1))
        for line in lines
        if line.split(maxsplit=1)[1].startswith(str(src))
    }
    expected = {
        ("M", f"{src}/a.txt"),
        ("U", f"{src}/other/e.txt"),
        ("-", f"{src}/sub/deeper/d.bin"),
        ("+", f"{src}/added"),
        ("+", f"{src}/added/new.txt"),
        ("T", f"{src}/emptydir"),
        ("U", str(src)),  # entries were added and removed: its mtime changed
        ("U", f"{src}/sub/deeper"),
    }
    assert changes == expected
    if len(changes) == len(lines):
        assert totals == "2 added, 1 removed, 1 modified, 3 metadata changed, 1 type changed"

    # Without --metadata, folders whose only change is their own time are left out
    # (restic's default); a file's metadata change still shows.
    plain = cli("diff", backed_up.point_id, second)
    plain_changes = {
        tuple(line.split(maxsplit=1))
        for line in plain.out.splitlines()[:-2]
        if line.split(maxsplit=1)[1].startswith(str(src))
    }
    assert plain_changes == expected - {("U", str(src)), ("U", f"{src}/sub/deeper")}
    os.chmod(src / "sub", 0o700)  # a folder's own metadata change is still one
    third = cli("backup", str(src), "--json").summary()["point_id"]
    assert ("U", f"{src}/sub") in {
        tuple(line.split(maxsplit=1)) for line in cli("diff", second, third).out.splitlines()[:-2]
    }

    same = cli("diff", second, second)
    assert same.rc == 0 and "0 added, 0 removed, 0 modified" in same.out


def test_diff_of_unchanged_points_lists_no_files(cli: CliRunner, backed_up: BackedUp) -> None:
    second = cli("backup", str(backed_up.src), "--json").summary()["point_id"]
    docs = cli("diff", backed_up.point_id, second, "--json").lines()
    # Directory atimes may differ (the first backup listed them): not a change.
    # The folders above src (the pytest base dir, /tmp) change when tests running
    # in parallel add their own folders: only what lies inside src is this test's.
    src = str(backed_up.src)
    changes = [d for d in docs if d["message_type"] == "change"]
    assert [d for d in changes if d["path"] == src or d["path"].startswith(src + "/")] == []
