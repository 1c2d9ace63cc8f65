"""Names of entries as manifests carry them, and names as a terminal shows them.

A manifest (a file tree, a VM manifest) comes from storage and a disk image's
file system from a guest: both are hostile until checked. A name that a
restore hands to `mkdir`/`openat` must therefore be one path component and
nothing else: not empty, not `.` or `..`, without `/` or NUL. A list of names
is sorted and unique, so each entry of a directory is created exactly once
(two entries `a`, a symlink and then a file, are how a restore used to be
walked outside its target).

Printing is the other half: a name may hold terminal escape sequences, and any
local user whose files are backed up can create one. `printable` escapes every
control character (C0, DEL, C1), the Unicode line separators and the
bidirectional overrides, so a listing shows what is there and a terminal
obeys none of it. Backslashes are left as they are: the escapes are for
safety, not for a reversible encoding (`--json` gives names exactly).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

_N = TypeVar("_N", bytes, str)

# C0 controls, DEL, C1 controls, line/paragraph separators, bidi embeddings,
# overrides and isolates, and the zero-width marks that reorder text.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)


def name_problem(name: _N) -> str | None:
    """Why `name` cannot be one path component (None when it can)."""
    if not name:
        return "an empty name"
    if isinstance(name, bytes):
        if name in (b".", b".."):
            return f"the name '{printable(name)}'"
        if b"/" in name or b"\0" in name:
            return f"a name with '/' or NUL ('{printable(name)}')"
        return None
    if name in (".", ".."):
        return f"the name '{printable(name)}'"
    if "/" in name or "\0" in name:
        return f"a name with '/' or NUL ('{printable(name)}')"
    return None


def names_problem(names: Sequence[_N]) -> str | None:
    """Why a directory's names (in stored order) are unusable: a bad name, a
    duplicate, or names out of order (they must be strictly increasing).

    Hot (every tree a backup or restore reads): the common, valid case is
    settled by a few C-level passes; the loop below only finds the message."""
    if names:
        unique = set(names)
        specials = _SPECIAL_BYTES if isinstance(names[0], bytes) else _SPECIAL_STR
        if (
            len(unique) == len(names)
            and unique.isdisjoint(specials)
            and sorted(names) == list(names)
            and not _has_separator(names[0][:0].join(names))
        ):
            return None
    previous: _N | None = None
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            return problem
        if previous is not None and name <= previous:
            kind = "duplicate" if name == previous else "unsorted"
            return f"{kind} name '{printable(name)}'"
        previous = name
    return None


_SPECIAL_BYTES = frozenset((b"", b".", b".."))
_SPECIAL_STR = frozenset(("", ".", ".."))


def _has_separator(joined: bytes | str) -> bool:
    if isinstance(joined, bytes):
        return b"/" in joined or b"\0" in joined
    return "/" in joined or "\0" in joined


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(name: bytes | str) -> str:
    """`name` for a terminal: bytes that are not UTF-8 as `\\xNN`, every control
    and reordering character escaped (a newline too: one name, one line)."""
    text = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    return _UNSAFE.sub(_escape, text)


def safe_text(text: str) -> str:
    """A message for a terminal: like `printable`, but newlines stay (messages
    and tables may span lines; the names inside them were escaped already)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _UNSAFE_KEEP_NEWLINE.sub(_escape, text)
