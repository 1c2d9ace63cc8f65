"""The harness's pure functions (rounds, spread, ratios, tables, checks) and its measuring
(a real command's wall time, CPU time and peak RSS through the launcher)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from harness.checks import Check, Failures, check_rows, info, ratio_check
from harness.peers import Restic, Strongroom, available
from harness.report import finish
from harness.spawn import Spawned, children, run_measured
from harness.stats import Spread, format_ratio, mb, median_index, ratio, run_rounds, verdict
from harness.tables import md_table, plain_table, sentences
from harness.verify import compare_trees
from harness.workspace import MIB, allocated, warm_file


def test_spread_of_rounds_is_median_and_range() -> None:
    s = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.rounds) == (2.5, 1.0, 10.0, 4)
    assert s.text() == "2.50 (1.00-10.00)"
    assert s.relative() == pytest.approx(9.0 / 2.5)
    assert Spread.of([1.234]).text() == "1.23"  # one round: no range
    with pytest.raises(ValueError):
        Spread.of([])


def test_median_index_picks_the_lower_middle_round() -> None:
    assert median_index([5.0, 1.0, 3.0]) == 2
    assert median_index([4.0, 1.0, 3.0, 2.0]) == 3  # sorted 1,2,3,4: the lower middle is 2.0


def test_run_rounds_throws_warmup_away() -> None:
    seen: list[int] = []

    def one(index: int) -> int:
        seen.append(index)
        return index * 10

    assert run_rounds(3, one, warmup=2) == [10, 20, 30]
    assert seen == [0, 0, 1, 2, 3]


def test_ratios_and_their_formatting() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, 0.0) is None
    assert format_ratio(1.5) == "1.50x"
    assert format_ratio(None) == "n/a"
    assert [verdict(True), verdict(False), verdict(None)] == ["PASS", "FAIL", "n/a"]
    assert mb(2_500_000) == "2.5"
    assert mb(None) == "?"
    assert mb(True) == "?"


def test_ratio_checks_judge_upper_and_lower_limits() -> None:
    assert ratio_check("t", 1.2, 1.0, 1.3, upper=True).passed is True
    assert ratio_check("t", 1.4, 1.0, 1.3, upper=True).passed is False
    assert ratio_check("t", 30.0, 1.0, 20, upper=False).passed is True
    missing = ratio_check("t", None, 1.0, 20, upper=False)
    assert missing.passed is None and missing.value is None
    rows = check_rows(
        [
            ratio_check("full / ref", 2.0, 1.0, 1.3, upper=True),
            info("  same (info)", 1.5),
            Check("serve", 321.4, "MB/s", ">= 300 MB/s", True),
            missing,
        ]
    )
    assert rows == [
        ["full / ref", "2.00x", "<= 1.3x", "FAIL"],
        ["  same (info)", "1.50x", "-", "-"],
        ["serve", "321 MB/s", ">= 300 MB/s", "PASS"],
        ["t", "n/a", ">= 20x", "n/a"],
    ]


def test_plain_table_aligns_columns_and_heads_groups() -> None:
    text = plain_table(
        ["phase", "s", "MB/s"],
        [["first", "1.50", "100.0"], ["restore", "12.25", "9.1"]],
        "lrr",
        groups=[("", 1), ("tool", 2)],
    )
    assert text.splitlines() == [
        "         ----tool----",
        "phase        s   MB/s",
        "-------  -----  -----",
        "first     1.50  100.0",
        "restore  12.25    9.1",
    ]
    with pytest.raises(ValueError):
        plain_table(["a", "b"], [], "l")


def test_markdown_table_and_sentences() -> None:
    assert md_table(["metric", "x"], [["speed", "2.00x"]], "lr").splitlines() == [
        "| metric | x |",
        "| :--- | ---: |",
        "| speed | 2.00x |",
    ]
    assert sentences(["page cache: warm", "one run.", ""]) == "Page cache: warm. One run."


def test_failures_are_listed_at_the_end() -> None:
    failures = Failures()
    assert not failures and failures.text_lines() == [] and failures.markdown_lines() == []
    failures.fail("restore: differs\ndetails")
    assert failures
    assert failures.text_lines() == ["", "failures:", "  restore: differs\ndetails"]
    assert failures.markdown_lines() == ["", "Failures: restore: differs"]


def test_run_measured_reports_time_cpu_peak_rss_and_exit_code(tmp_path: Path) -> None:
    # 64 MiB touched: the peak RSS is the command's, well above the launcher's ~10 MiB floor.
    code = "b = bytearray(64 * 1024 * 1024); print('out'); raise SystemExit(3)"
    m = run_measured([sys.executable, "-c", code], dict(os.environ), tmp_path, tmp_path / "c")
    assert m.exit_code == 3
    assert m.peak_rss_kib >= 64 * 1024
    assert m.seconds > 0 and m.cpu_seconds > 0
    assert (tmp_path / "c.out").read_text() == "out\n"
    assert (tmp_path / "c.err").read_text().startswith(f"$ {sys.executable} -c")


def test_run_measured_counts_the_children_the_command_waited_for(tmp_path: Path) -> None:
    child = "b = bytearray(96 * 1024 * 1024)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    m = run_measured([sys.executable, "-c", code], dict(os.environ), tmp_path, tmp_path / "c")
    assert m.exit_code == 0
    assert m.peak_rss_kib >= 96 * 1024


def test_a_command_that_cannot_start_exits_127(tmp_path: Path) -> None:
    m = run_measured(["/nonexistent/tool"], dict(os.environ), tmp_path, tmp_path / "x")
    assert m.exit_code == 127
    assert "cannot run /nonexistent/tool" in (tmp_path / "x.err").read_text()


def test_spawned_runs_in_the_background_until_signalled(tmp_path: Path) -> None:
    job = Spawned(["sleep", "30"], dict(os.environ), tmp_path, tmp_path / "s")
    assert job.running
    deadline = time.monotonic() + 10
    while not children(job.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    job.signal(signal.SIGTERM)
    m = job.finish(timeout=10)
    assert m.exit_code == -signal.SIGTERM
    assert m.seconds < 30
    assert job.ended >= job.started


def test_warm_file_reads_only_the_data_of_a_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with path.open("wb") as f:
        f.truncate(64 * MIB)
        f.seek(32 * MIB)
        f.write(b"x" * MIB)
    read = warm_file(path)
    assert MIB <= read <= allocated(path) + MIB  # the data extent, not 64 MiB
    assert read < 8 * MIB


def test_compare_trees_finds_missing_and_changed_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "d").mkdir(parents=True)
        (root / "d" / "same").write_bytes(b"same")
        (root / "link").symlink_to("d/same")
    (a / "d" / "changed").write_bytes(b"one")
    (b / "d" / "changed").write_bytes(b"two")
    (a / "only-in-a").write_bytes(b"")
    problems, _ = compare_trees(a, b)
    assert problems == ["missing: only-in-a", "content differs: d/changed"]
    (b / "only-in-a").write_bytes(b"")
    (b / "d" / "changed").write_bytes(b"one")
    assert compare_trees(a, b)[0] == []


def test_a_missing_peer_is_skipped_with_a_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no restic here
    found, skipped = available([Strongroom(), Restic()], install=False)
    assert [t.name for t in found] == ["strongroom"]
    assert skipped == ["restic: not installed (apt-get install restic), not measured"]


def test_finish_prints_writes_json_and_sets_the_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    assert finish("report", {"a": Path("/x"), "b": 1}, out, tmp_path, Failures()) == 0
    assert capsys.readouterr().out == "report\n"
    assert json.loads(out.read_text()) == {"a": "/x", "b": 1}
    failed = Failures(["export: differs"])
    assert finish("report", {}, None, tmp_path, failed) == 1
    assert "FAILED: export: differs" in capsys.readouterr().err
