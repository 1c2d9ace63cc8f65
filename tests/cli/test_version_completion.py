"""`strongroom version` and `strongroom completion` (issue #17)."""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

import pytest

from strongroom import __version__
from tests.conftest import CliRunner


def test_version_names_the_format_and_the_libraries(cli: CliRunner) -> None:
    text = cli("version")
    assert text.rc == 0
    lines = text.out.splitlines()
    assert lines[0] == f"strongroom {__version__}"
    assert lines[1] == "repository format 1"
    assert f"zstandard {metadata.version('zstandard')}" in lines[3]
    doc = cli("version", "--json").summary()
    assert doc["version"] == __version__ and doc["format_version"] == 1
    assert doc["libraries"]["blake3"] == metadata.version("blake3")
    assert doc["libraries"]["pyfastcdc"] == "0.3.1"  # pinned: part of the format


def _bash_complete(script: str, words: list[str], env: dict[str, str]) -> list[str]:
    """What bash offers after `words` (the last one being completed), through the
    script as a user's shell loads it."""
    program = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n"
        '_strongroom_completion strongroom; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.split()


def test_bash_completion_completes_commands_options_and_choices(
    cli: CliRunner, cli_env: dict[str, str]
) -> None:
    script = cli("completion", "bash")
    assert script.rc == 0
    subprocess.run(["bash", "-n"], input=script.out, text=True, check=True)
    assert _bash_complete(script.out, ["strongroom", "bac"], cli_env) == ["backup"]
    assert "--exclude-file" in _bash_complete(
        script.out, ["strongroom", "backup", "--excl"], cli_env
    )
    assert _bash_complete(script.out, ["strongroom", "completion", "f"], cli_env) == ["fish"]


@pytest.mark.parametrize(
    ("shell", "needle"), [("zsh", "#compdef strongroom"), ("fish", "complete")]
)
def test_zsh_and_fish_scripts(cli: CliRunner, shell: str, needle: str) -> None:
    script = cli("completion", shell)
    assert script.rc == 0
    assert needle in script.out and "_STRONGROOM_COMPLETE" in script.out
    if shutil.which(shell):  # a syntax check where the shell is installed
        check = ["zsh", "-n"] if shell == "zsh" else ["fish", "--no-execute"]
        subprocess.run(check, input=script.out, text=True, check=True)


def test_unknown_shell_is_a_usage_error(cli: CliRunner) -> None:
    result = cli("completion", "tcsh")
    assert result.rc == 2
    assert "tcsh" in result.err


def test_counts_are_told_in_the_right_number(
    cli: CliRunner, initialized_repo: object, small_src: tuple[object, object]
) -> None:
    """ "1 point", not "1 points" (issue #17), in the human output of the commands."""
    from strongroom.cli.output import plural

    assert [plural(n, "point") for n in (0, 1, 2)] == ["0 points", "1 point", "2 points"]
    assert (
        plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
    )
    src, _ = small_src
    assert cli("backup", str(src)).rc == 0
    listing = cli("snapshots")
    assert listing.out.rstrip().endswith("1 point") or "1 point\n" in listing.out + listing.err
    assert "1 points" not in listing.out + listing.err


def test_progress_columns() -> None:
    """The bar's text columns (#17): percentage and files against the totals once
    the walk ahead has counted them, and the current file shortened from the left."""
    from strongroom.cli.output import progress_current, progress_files, progress_percent
    from strongroom.types import Progress

    p = Progress(job="backup", files_done=1, bytes_done=0)
    assert (progress_percent(p), progress_files(p)) == ("", "1 file")
    p.files_total, p.bytes_total, p.bytes_done, p.files_done = 5000, 1000, 421, 120
    assert (progress_percent(p), progress_files(p)) == (" 42%", "120/5,000 files")
    p.current = "/srv/" + "x" * 100 + "/last.txt"
    shown = progress_current(p, 80)
    assert len(shown) == 20 and shown.startswith("…") and shown.endswith("/last.txt")
    p.current = "/etc/\x1b[31mred"  # terminal escapes from a file name are not drawn
    assert "\x1b" not in progress_current(p, 200)
