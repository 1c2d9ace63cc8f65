"""Exclude patterns in restic's style.

A pattern without a slash matches any path component's name (`*.tmp`,
`node_modules`); a pattern with a slash matches the whole absolute path from
its start (`/home/*/.cache`), and a matched directory excludes everything in
it. `**` matches across slashes. Lines in an exclude file that are empty or
start with `#` are ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from strongroom.errors import UsageError


def _translate(pattern: str) -> re.Pattern[bytes]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    try:
        return re.compile(os.fsencode("".join(out) + r"\Z"), re.DOTALL)
    except re.error as err:
        raise UsageError(f"exclude pattern {pattern!r} is malformed: {err}") from None


class Excluder:
    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._name_patterns: list[re.Pattern[bytes]] = []
        self._path_patterns: list[re.Pattern[bytes]] = []
        for raw in patterns:
            pat = raw.strip()
            if not pat or pat.startswith("#"):
                continue
            if "/" in pat.rstrip("/"):
                self._path_patterns.append(_translate(pat.rstrip("/")))
            else:
                self._name_patterns.append(_translate(pat.rstrip("/")))

    def __bool__(self) -> bool:
        return bool(self._name_patterns or self._path_patterns)

    def excluded(self, path: bytes, name: bytes) -> bool:
        """True if the entry at absolute `path` (with basename `name`) is excluded."""
        if any(p.match(name) for p in self._name_patterns):
            return True
        return any(p.match(path) for p in self._path_patterns)

    @staticmethod
    def read_file(path: str) -> list[str]:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return [line.rstrip("\n") for line in f]
