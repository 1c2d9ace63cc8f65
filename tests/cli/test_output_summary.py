"""Output.summary(): the one closing summary of a command (one JSON line with
--json, human lines otherwise, nothing with --quiet)."""

from __future__ import annotations

import json

import pytest

from strongroom.cli.output import Output


def test_json_summary_is_one_line_with_its_message_type(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Output(json_mode=True).summary({"point_id": "ab", "files": 2}, ["not printed"])
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"message_type": "summary", "point_id": "ab", "files": 2}
    ]


def test_human_summary_prints_its_lines_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    Output().summary({"ignored": True}, (f"line {i}\x1b[2J" for i in range(2)))
    assert capsys.readouterr().out.splitlines() == ["line 0\\x1b[2J", "line 1\\x1b[2J"]


def test_quiet_summary_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Output(quiet=True).summary({"a": 1}, ["line"])
    assert capsys.readouterr().out == ""
