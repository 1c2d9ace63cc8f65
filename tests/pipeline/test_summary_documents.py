"""Summaries become JSON through dataclasses.asdict: the documents keep their
names, order and exclusions (scripts parse `--json`)."""

from __future__ import annotations

from strongroom.pipeline.backup import BackupSummary
from strongroom.pipeline.image_backup import ImageBackupSummary
from strongroom.protect.cycles import CycleResult
from strongroom.services.export import ExportSummary


def test_backup_summary_counts_warnings_and_leaves_out_the_tree() -> None:
    doc = BackupSummary(files_new=2, tree_id="ab", warnings=["x", "y"], unreadable=1).as_dict()
    assert list(doc) == [
        "files_new", "files_changed", "files_unmodified", "dirs", "other_entries",
        "total_files", "total_bytes", "bytes_read", "chunks_new", "data_added",
        "data_added_stored", "warnings", "unreadable", "files_from_seed", "excluded_dirs",
    ]  # fmt: skip
    assert (doc["files_new"], doc["warnings"], doc["unreadable"]) == (2, 2, 1)


def test_image_summary_leaves_out_map_root_and_warnings() -> None:
    doc = ImageBackupSummary(size=5, map_root="cd", warnings=["w"], holes=3).as_dict()
    assert "map_root" not in doc and "warnings" not in doc
    keys = list(doc)
    assert keys[0] == "size" and keys[-1] == "holes" and doc["holes"] == 3


def test_export_summary_calls_kind_type() -> None:
    doc = ExportSummary("p", "/x.vhd", "dynamic", 1, 2, 3, 4, "u").as_dict()
    assert list(doc) == [
        "point_id", "path", "type", "size", "file_size", "blocks_written",
        "bytes_written", "uuid", "parent", "base_point_id", "base_seed",
    ]  # fmt: skip
    assert doc["type"] == "dynamic"


def test_cycle_result_rounds_seconds_in_place() -> None:
    doc = CycleResult(cycle=1, kind="base", seconds=1.23456).as_dict()
    assert doc["seconds"] == 1.235
    assert list(doc)[-3:] == ["seconds", "warnings", "recovered"]
