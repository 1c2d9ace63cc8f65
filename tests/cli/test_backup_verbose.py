"""`backup -v` lists new and modified files as it meets them, `-vv` every file
with what changed (issue #17, restic's -v)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.tree import write_file


def _lines(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("new", "modified", "unchanged"):
            path, _, why = rest.strip().partition(" (")
            found[path] = f"{word} ({why}" if why else word
    return found


def test_verbose_backup_names_files_and_reasons(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    for name in ("same.txt", "grow.txt", "touch.txt", "chmod.txt"):
        write_file(src / name, name.encode())
    first = _lines(cli("backup", "-v", str(src)).out)
    assert first == {
        str(src / n): "new" for n in ("chmod.txt", "grow.txt", "same.txt", "touch.txt")
    }

    (src / "grow.txt").write_bytes(b"grown content")
    os.utime(src / "touch.txt", ns=(1, 1_000_000_000))
    os.chmod(src / "chmod.txt", 0o600)
    write_file(src / "added.txt", b"new")
    plain = _lines(cli("backup", "-v", str(src)).out)
    assert set(plain) == {str(src / n) for n in ("grow.txt", "touch.txt", "chmod.txt", "added.txt")}
    assert plain[str(src / "added.txt")] == "new"

    os.utime(src / "touch.txt", ns=(1, 2_000_000_000))
    detailed = _lines(cli("backup", "-vv", str(src)).out)
    assert detailed[str(src / "same.txt")] == "unchanged"
    assert detailed[str(src / "touch.txt")].startswith("modified")
    assert (
        "mtime" in detailed[str(src / "touch.txt")] or "ctime" in detailed[str(src / "touch.txt")]
    )
    quiet = cli("backup", str(src))
    assert _lines(quiet.out) == {}
