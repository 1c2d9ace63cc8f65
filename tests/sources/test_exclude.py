"""Exclude patterns: names anywhere, or whole absolute paths."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import UsageError
from strongroom.sources.exclude import Excluder

# No spaces: patterns are stripped of surrounding whitespace (see below).
name_chars = st.sampled_from("abcxyz.-_\xe9")
names = st.text(name_chars, min_size=1, max_size=8).map(lambda s: s.encode("utf-8"))
# Name patterns from literal characters, `*` and `?` (no brackets: fnmatch and the
# documented semantics agree exactly on these).
name_patterns = st.text(st.one_of(name_chars, st.sampled_from("*?")), min_size=1, max_size=6)


def _path_of(parts: list[bytes]) -> bytes:
    return b"/" + b"/".join(parts)


@given(pattern=name_patterns, parents=st.lists(names, max_size=3), name=names)
def test_name_patterns_match_the_entry_name_anywhere(
    pattern: str, parents: list[bytes], name: bytes
) -> None:
    path = _path_of([*parents, name])
    expected = fnmatch.fnmatchcase(name, pattern.encode("utf-8"))
    assert Excluder([pattern]).excluded(path, name) == expected


@given(parts=st.lists(names, min_size=1, max_size=4), star=st.integers(0, 3), other=names)
def test_path_patterns_match_the_whole_path(parts: list[bytes], star: int, other: bytes) -> None:
    pattern_parts = [p.decode() for p in parts]
    pattern_parts[star % len(parts)] = "*"
    pattern = "/" + "/".join(pattern_parts)
    ex = Excluder([pattern])
    path = _path_of(parts)
    assert ex.excluded(path, parts[-1])
    # `*` does not cross a slash: one component more or fewer does not match.
    assert not ex.excluded(_path_of([*parts, other]), other)
    if len(parts) > 1:
        assert not ex.excluded(_path_of(parts[:-1]), parts[-2])
    # A path pattern is anchored at the root, not a suffix match.
    assert not ex.excluded(b"/prefix" + path, parts[-1])


@given(middle=st.lists(names, max_size=4), name=names)
def test_double_star_crosses_slashes(middle: list[bytes], name: bytes) -> None:
    ex = Excluder(["/home/**/cache"])
    path = _path_of([b"home", *middle, b"cache"])
    assert ex.excluded(path, b"cache") == (len(middle) >= 1)
    assert not ex.excluded(_path_of([b"home", *middle, name + b"x"]), name + b"x")


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.tmp", b"/a/b/file.tmp", True),
        ("*.tmp", b"/a/b/file.tmpx", False),
        ("node_modules", b"/src/node_modules", True),
        ("node_modules/", b"/src/node_modules", True),  # a trailing slash is ignored
        ("/home/*/.cache", b"/home/ann/.cache", True),
        ("/home/*/.cache", b"/home/ann/x/.cache", False),
        ("/home/*/.cache", b"/srv/home/ann/.cache", False),
        ("x[!y]z", b"/d/xaz", True),
        ("x[!y]z", b"/d/xyz", False),
        ("[ab]c", b"/d/bc", True),
        ("[ab]c", b"/d/cc", False),
        ("a?c", b"/d/abc", True),
        ("a?c", b"/d/a/c", False),
        ("*", b"/anything", True),
        ("a+b(c)", b"/d/a+b(c)", True),  # regex characters are literal
        ("a.c", b"/d/abc", False),
    ],
)
def test_documented_examples(pattern: str, path: bytes, expected: bool) -> None:
    assert Excluder([pattern]).excluded(path, path.rsplit(b"/", 1)[1]) is expected


def test_comments_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    f = tmp_path / "excludes"
    f.write_text("# a comment\n\n   \n*.log\n/abs/path\n", encoding="utf-8")
    ex = Excluder(Excluder.read_file(str(f)))
    assert ex
    assert ex.excluded(b"/x/y.log", b"y.log")
    assert ex.excluded(b"/abs/path", b"path")
    assert not ex.excluded(b"/x/# a comment", b"# a comment")
    assert not Excluder(["# only a comment", ""])


def test_surrounding_whitespace_is_stripped() -> None:
    ex = Excluder(["  *.log  \t"])
    assert ex.excluded(b"/d/a.log", b"a.log")


def test_non_utf8_names() -> None:
    ex = Excluder(["*.bin"])
    assert ex.excluded(b"/d/\xff\xfe.bin", b"\xff\xfe.bin")
    assert not ex.excluded(b"/d/\xff\xfe.txt", b"\xff\xfe.txt")


@pytest.mark.parametrize("pattern", ["[]", "[!]", "[z-a]"])
def test_malformed_bracket_patterns_are_usage_errors(pattern: str) -> None:
    """Regression: these once raised re.error (an 'internal error' in the CLI)."""
    with pytest.raises(UsageError, match="malformed"):
        Excluder([pattern])


@given(patterns=st.lists(st.text(max_size=12), max_size=4), name=names)
def test_any_pattern_is_accepted_or_a_usage_error(patterns: list[str], name: bytes) -> None:
    try:
        ex = Excluder(patterns)
    except UsageError:
        return
    ex.excluded(b"/d/" + name, name)
