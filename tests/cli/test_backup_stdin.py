"""`backup --stdin --stdin-filename NAME` (issue #17): a real `sqlite3 .dump`
piped in, stored as /NAME, restored and dumped byte-exact, deduplicated the
second time; bad names and mixed requests are usage errors."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error, strongroom_command


@pytest.fixture
def dump(tmp_path: Path) -> bytes:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (id integer primary key, v text)")
        conn.executemany("insert into t(v) values (?)", [(f"row {i} " * 40,) for i in range(4000)])
    if shutil.which("sqlite3"):
        return subprocess.run(["sqlite3", str(db), ".dump"], capture_output=True, check=True).stdout
    with sqlite3.connect(db) as conn:  # the same SQL text, without the CLI
        return "\n".join(conn.iterdump()).encode() + b"\n"


def test_a_dump_piped_in_is_stored_and_restored(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str], initialized_repo: Path, dump: bytes
) -> None:
    assert len(dump) > 1_000_000
    first = cli("backup", "--stdin", "--stdin-filename", "dumps/app.sql", "--json", input=dump)
    assert first.rc == 0, first.err
    summary = first.summary()
    assert summary["total_bytes"] == len(dump) and summary["data_added"] >= len(dump)
    points = cli("snapshots", "--json").json()
    assert points[0]["paths"] == ["/dumps/app.sql"]

    restored = tmp_path / "restored"
    assert cli("restore", "latest", "--target", str(restored)).rc == 0
    out = restored / "dumps" / "app.sql"
    assert out.read_bytes() == dump and (out.stat().st_mode & 0o777) == 0o600
    dumped = cli("dump", "latest", "/dumps/app.sql", binary=True)
    assert dumped.out == dump

    # Through a real pipe the second time: no file data stored again.
    sqlite_dump = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    backup = subprocess.Popen(
        [*strongroom_command(), "backup", "--stdin", "--stdin-filename", "dumps/app.sql", "--json"],
        stdin=sqlite_dump.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
    )
    assert sqlite_dump.stdout is not None and sqlite_dump.stdin is not None
    sqlite_dump.stdout.close()
    sqlite_dump.stdin.write(dump)
    sqlite_dump.stdin.close()
    stdout, stderr = backup.communicate(timeout=120)
    assert backup.returncode == 0, stderr
    again = [json.loads(line) for line in stdout.splitlines() if line.startswith(b"{")][-1]
    assert again["total_bytes"] == len(dump) and again["data_added"] < 4096  # its trees only
    assert cli("check", "--read-data").rc == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--stdin", "--stdin-filename", "/abs.sql"], "relative file name"),
        (["--stdin", "--stdin-filename", "a/../b"], "relative file name"),
        (["--stdin", "--stdin-filename", ""], "relative file name"),
        (["--stdin", "somepath"], "standard input alone"),
        (["--stdin-filename", "x.sql", "somepath"], "goes with --stdin"),
    ],
)
def test_bad_stdin_requests(
    cli: CliRunner, initialized_repo: Path, args: list[str], needle: str
) -> None:
    result = cli("backup", *args, input=b"data")
    assert result.rc == 2, result
    assert_one_line_error(result, needle)
