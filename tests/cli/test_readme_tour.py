"""The README's short tour is what the program prints today.

Every `$` line of the tour's first console block is run (strongroom commands
through the real program, `echo` and `export` as the shell would), and each
command's output is compared with the README's, line by line, in shape:
numbers, ids, dates and size units are placeholders, column spacing is not
compared, and the test's temporary paths stand for the README's. A wording,
a column or a line the program no longer prints (or newly prints) fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.cli.test_docs import ROOT
from tests.conftest import CliRunner

_SIZE = re.compile(r"\bN (B|KiB|MiB|GiB|TiB)\b")


def _tour() -> list[tuple[str, list[str]]]:
    """(command line, expected output lines) of the README's first console block."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```")]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:].split("  #")[0].strip(), []))
        elif steps and not line.startswith(("Enter ", "Repeat ")):  # prompts: the terminal's
            steps[-1][1].append(line)
    return steps


def _shape(lines: list[str], paths: dict[str, str]) -> list[str]:
    shaped = []
    for line in lines:
        for real, shown in paths.items():
            line = line.replace(real, shown)
        line = re.sub(r"\b[0-9a-f]{8,64}\b", "H", line)
        line = re.sub(r"\d+(?:[.,:]\d+)*", "N", line)
        line = _SIZE.sub("N U", line)
        line = " ".join(line.split())
        if line:
            shaped.append(line)
    return shaped


def _tree(docs: Path) -> None:
    """A small tree in the tour's shape: src/cli/__init__.py, src/storage/sftp.py, notes.txt."""
    layout = {"src/cli": ["__init__.py", "main.py"], "src/storage": ["__init__.py", "sftp.py"]}
    for folder, names in layout.items():
        (docs / folder).mkdir(parents=True)
        for i, name in enumerate(names):
            (docs / folder / name).write_text(f"# {name}\n" + "x = 1\n" * (200 * (i + 1)))
    (docs / "notes.txt").write_text("some notes\n")


def test_the_tour_prints_what_the_readme_shows(
    tmp_path: Path, cli: CliRunner, repo_path: Path
) -> None:
    home = tmp_path / "home" / "ann"
    home.mkdir(parents=True)
    _tree(home / "docs")
    restored = tmp_path / "restored"
    paths = {str(home): "/home/ann", str(repo_path): "/srv/backup/repo"}
    paths[str(restored)] = "/tmp/restored"
    to_real = {"/home/ann": str(home), "/tmp/restored": str(restored), "~": str(home)}
    ids: dict[str, str] = {}  # README's point ids -> this run's
    for command, expected in _tour():
        words = shlex.split(command)
        if words[0] == "export":
            continue  # the repository is the test's (STRONGROOM_REPO)
        if words[0] == "echo":
            target = words[-1]
            for shown, real in to_real.items():
                if target.startswith(shown):
                    target = real + target[len(shown) :]
                    if shown == "/tmp/restored":  # below it, the point's absolute paths
                        target = target.replace("/home/ann", str(home), 1)
                    break
            mode = "a" if words[-2] == ">>" else "w"
            with open(target, mode) as f:
                f.write(" ".join(words[1:-2]) + "\n")
            continue
        assert words[0] == "strongroom", command
        args = []
        for word in words[1:]:
            for shown, real in to_real.items():
                if word.startswith(shown):
                    word = real + word[len(shown) :]
            args.append(ids.get(word, word))
        if args[0] == "dump":  # `dump POINT PATH > FILE`: the file's bytes on stdout
            dumped = cli(*args[: args.index(">")], binary=True)
            assert dumped.rc == 0 and dumped.out == Path(args[2]).read_bytes()
            continue
        result = cli(*args, env={"COLUMNS": "200"})
        assert result.rc == 0, f"{command}: {result.err}"
        out = result.out.splitlines() + [
            line for line in result.err.splitlines() if not line.startswith("Enter ")
        ]
        saved = re.findall(r"^point ([0-9a-f]{8}) saved$", result.out, re.M)
        shown_saved = [line.split()[1] for line in expected if line.startswith("point ")]
        ids.update(zip(shown_saved, saved, strict=True))
        assert sorted(_shape(out, paths)) == sorted(_shape(expected, paths)), command
