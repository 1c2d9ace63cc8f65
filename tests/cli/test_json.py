"""`--json`: stdout carries only JSON, in the documented shapes (docs/cli.md)."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner
from tests.helpers.tree import random_bytes, write_file

POINT_KEYS = {"id", "version", "kind", "time", "host", "user", "paths", "tree", "parent"}
POINT_KEYS |= {"tags", "consistency", "program", "summary"}
SUMMARY_KEYS = {"files_new", "files_changed", "files_unmodified", "dirs", "other_entries"}
SUMMARY_KEYS |= {"total_files", "total_bytes", "bytes_read", "chunks_new", "data_added"}
SUMMARY_KEYS |= {"data_added_stored", "warnings", "unreadable", "dry_run", "point_id"}
SUMMARY_KEYS |= {"parent", "seconds", "message_type"}
SUMMARY_KEYS |= {"files_from_seed", "seeds", "seeds_skipped"}  # backups against seeds
SUMMARY_KEYS |= {"excluded_dirs"}  # --exclude-caches, --exclude-if-present


def test_init_json(cli: CliRunner, repo_path: Path) -> None:
    result = cli("init", "--json")
    assert result.rc == 0
    doc = result.json()
    assert doc["message_type"] == "initialized"
    assert doc["repository"] == str(repo_path)
    assert len(doc["key"]) == 64 and (repo_path / "keys" / doc["key"]).is_file()


def test_backup_json_lines_end_with_a_summary(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    for i in range(3):
        write_file(src / f"f{i}", random_bytes(2 * 1024 * 1024, i))
    write_file(src / "small", b"x")
    result = cli("backup", str(src), "--json", "--tag", "t1", "--tag", "t2")
    assert result.rc == 0, result.err
    lines = result.lines()
    assert lines[-1]["message_type"] == "summary"
    assert set(lines[-1]) == SUMMARY_KEYS
    assert lines[0]["message_type"] == "status"
    assert all(d["message_type"] in ("status", "warning") for d in lines[:-1])
    summary = lines[-1]
    assert summary["total_files"] == summary["files_new"] == 4
    assert summary["total_bytes"] == summary["bytes_read"] == 3 * 2 * 1024 * 1024 + 1
    assert summary["dry_run"] is False and summary["parent"] is None
    assert len(summary["point_id"]) == 64
    for status in lines[:-1]:
        assert status["job"] == "backup"
        assert {"files_done", "bytes_done", "bytes_added", "errors", "seconds_elapsed"} <= set(
            status
        )
    assert result.err == ""


def test_snapshots_json_is_a_list_of_points(cli: CliRunner, backed_up: BackedUp) -> None:
    empty_repo_doc = cli("snapshots", "--json", env={"STRONGROOM_REPO": str(backed_up.src)})
    assert empty_repo_doc.rc == 10
    second = cli("backup", str(backed_up.src), "--json", "--tag", "again").summary()
    result = cli("snapshots", "--json")
    assert result.rc == 0
    points = result.json()
    assert isinstance(points, list) and len(points) == 2
    assert [p["id"] for p in points] == [backed_up.point_id, second["point_id"]]  # oldest first
    for p in points:
        assert set(p) == POINT_KEYS
        assert p["kind"] == "files" and p["paths"] == [str(backed_up.src)]
    assert points[1]["parent"] == points[0]["id"]
    assert points[1]["tags"] == ["again"]
    assert cli("snapshots", "--json", "--tag", "again").json()[0]["id"] == second["point_id"]
    assert cli("snapshots", "--json", "--host", "elsewhere").json() == []


def test_global_and_trailing_json_flags(cli: CliRunner, backed_up: BackedUp) -> None:
    assert cli("--json", "snapshots").json() == cli("snapshots", "--json").json()


def test_restore_json_summary(tmp_path: Path, cli: CliRunner, backed_up: BackedUp) -> None:
    result = cli("restore", "latest", "--target", str(tmp_path / "t"), "--json")
    assert result.rc == 0
    summary = result.summary()
    assert summary["point_id"] == backed_up.point_id
    assert summary["files"] == len(backed_up.files)
    assert summary["bytes_written"] == sum(len(d) for d in backed_up.files.values())
    assert summary["damaged"] == [] and summary["warnings"] == []


def test_ls_json_lines(cli: CliRunner, backed_up: BackedUp) -> None:
    result = cli("ls", "latest", str(backed_up.src), "--json")
    assert result.rc == 0
    docs = result.lines()
    assert docs[0]["path"] == str(backed_up.src) and docs[0]["type"] == "d"
    by_path = {d["path"]: d for d in docs}
    a = by_path[str(backed_up.src / "a.txt")]
    assert a["type"] == "f" and a["size"] == len(backed_up.files["a.txt"])
    assert a["mode"] == "0o644" and a["link_target"] is None
    assert set(a) == {"path", "type", "mode", "uid", "gid", "size", "mtime", "link_target"}


def test_check_stats_key_list_json(cli: CliRunner, backed_up: BackedUp) -> None:
    check = cli("check", "--json").json()
    assert check == {
        "ok": True,
        "errors": [],
        "warnings": [],
        "packs_read": 0,
        "chunks_read": 0,
        "damaged_files": {},
    }
    read = cli("check", "--read-data", "--json").document()
    assert read["ok"] and read["packs_read"] >= 2 and read["chunks_read"] >= 6
    stats = cli("stats", "--json").json()
    assert stats["points"] == 1
    assert stats["logical_bytes"] == sum(len(d) for d in backed_up.files.values())
    assert stats["stored_bytes"] > 0 and stats["chunks"] >= 6
    keys = cli("key", "list", "--json").json()
    assert len(keys) == 1 and keys[0]["current"] is True and len(keys[0]["id"]) == 64


def test_diff_json(cli: CliRunner, backed_up: BackedUp) -> None:
    (backed_up.src / "a.txt").write_bytes(b"changed\n")
    second = cli("backup", str(backed_up.src), "--json").summary()["point_id"]
    docs = cli("diff", backed_up.point_id[:8], second[:8], "--json").lines()
    assert {"message_type": "change", "modifier": "M", "path": str(backed_up.src / "a.txt")} in docs
    assert docs[-1]["message_type"] == "statistics" and docs[-1]["modified"] == 1


def test_json_errors_are_not_json(cli: CliRunner, backed_up: BackedUp) -> None:
    result = cli("restore", "ffff", "--target", "x", "--json")
    assert result.rc == 1
    assert result.out == ""
    assert result.err.startswith("strongroom: error:")
