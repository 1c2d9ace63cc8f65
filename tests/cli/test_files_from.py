"""`backup --files-from`, `--files-from-verbatim`, `--files-from-raw` (issue #17)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.tree import write_file


def _backed_up(cli: CliRunner) -> list[str]:
    return sorted(cli("snapshots", "--json").json()[-1]["paths"])


def test_paths_from_lists(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    for name in ("a.txt", "b.log", "c.log", " lead", "#hash", "odd\nname"):
        write_file(tmp_path / "src" / name, name.encode())
    src = tmp_path / "src"

    plain = tmp_path / "list.txt"
    plain.write_text(f"# a comment\n\n  {src}/a.txt  \n{src}/*.log\n")
    assert cli("backup", "--files-from", str(plain)).rc == 0
    assert _backed_up(cli) == [f"{src}/a.txt", f"{src}/b.log", f"{src}/c.log"]

    verbatim = tmp_path / "verbatim.txt"
    verbatim.write_text(f"{src}/ lead\n{src}/#hash\n")
    assert cli("backup", "--files-from-verbatim", str(verbatim)).rc == 0
    assert _backed_up(cli) == [f"{src}/ lead", f"{src}/#hash"]

    raw = f"{src}/odd\nname\0{src}/a.txt\0".encode()
    assert cli("backup", "--files-from-raw", "-", input=raw).rc == 0
    assert _backed_up(cli) == [f"{src}/a.txt", f"{src}/odd\nname"]

    both = cli("backup", str(src / "b.log"), "--files-from-raw", "-", input=f"{src}/a.txt".encode())
    assert both.rc == 0 and _backed_up(cli) == [f"{src}/a.txt", f"{src}/b.log"]


def test_bad_lists(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    result = cli("backup", "--files-from", str(empty))
    assert result.rc == 2 and assert_one_line_error(result, "empty")
    missing = cli("backup", "--files-from", str(tmp_path / "nope"))
    assert missing.rc == 2 and assert_one_line_error(missing, "--files-from")
    twice = cli("backup", "--files-from", "-", "--files-from-raw", "-", input=b"x")
    assert twice.rc == 2 and assert_one_line_error(twice, "one list only")
    mixed = cli("backup", "--stdin", "--files-from", str(empty), input=b"x")
    assert mixed.rc == 2 and assert_one_line_error(mixed, "standard input alone")
