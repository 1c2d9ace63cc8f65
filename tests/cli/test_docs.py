"""The documentation stays true to the program: every command is in docs/cli.md's
table, and no link in docs/ or the README leaves the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from strongroom.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_command_table_lists_every_command() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("| command | does | lock |") : text.index("## Global options")]
    listed = set(re.findall(r"^\| \[`([\w-]+)", table, re.M))
    assert listed == set(COMMANDS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_link_leaves_the_repository(doc: Path) -> None:
    text = doc.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    outside = [t for t in targets if re.match(r"[a-z][a-z0-9+.-]*:|//|\.\./|/", t)]
    assert outside == [], f"{doc.name} links outside the repository: {outside}"
    assert "../shared" not in text, f"{doc.name} names a path outside the repository"
