"""Usage errors look like every other error (issue #17): one line, `strongroom:
error: ...`, exit code 2, with the closest command or option named and where to
read more; wrong numbers get a sentence, not Python's exception text."""

from __future__ import annotations

import pytest

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["bakup"], ["no such command 'bakup'", "did you mean 'backup'", "'strongroom --help'"]),
        (["snapshot"], ["did you mean 'snapshots'"]),
        (["xyzzy"], ["no such command 'xyzzy'; see 'strongroom --help'"]),
        (["backup", "--exlude", "x"], ["'--exclude'", "see 'strongroom backup --help'"]),
        (["forget", "--keep-last", "abc"], ["'abc' is not a valid integer"]),
        (["restore"], ["missing argument 'POINT'"]),
        (["check", "--read-data-subset", "2.5G"], ["takes n/m", "a percentage", "'2.5G'"]),
        (["check", "--read-data-subset", "5/2"], ["1 <= n <= m"]),
        (["completion", "tcsh"], ["'tcsh' is not one of"]),
    ],
)
def test_usage_errors_are_one_line_in_the_error_format(
    cli: CliRunner, args: list[str], needles: list[str]
) -> None:
    result = cli(*args)
    assert result.rc == 2, result
    assert_one_line_error(result, needles[0], only=True)
    for needle in needles[1:]:
        assert needle in result.err, result.err
    assert "Traceback" not in result.err and "invalid literal" not in result.err
    assert "Usage:" not in result.err + result.out
