"""Running the real `strongroom` program in a subprocess, and reading its output."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

PASSWORD = "correct horse battery staple"
FAST_KDF = "1,8192,1"


def strongroom_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m strongroom`."""
    script = Path(sys.executable).with_name("strongroom")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "strongroom"]


NOBODY = 65534
_SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


@functools.cache
def nobody_command() -> list[str]:
    """A command line prefix running strongroom as user `nobody` (from root).

    `setpriv` if `nobody` can run this Python installation; else a launcher that
    imports what it needs as root and drops privileges before strongroom starts
    (an installation below /root is not readable by `nobody`).
    """
    direct = [*_SETPRIV, *strongroom_command()]
    if shutil.which("setpriv"):
        probe = subprocess.run([*direct, "--version"], capture_output=True, cwd="/", check=False)
        if probe.returncode == 0:
            return direct
    return [sys.executable, str(Path(__file__).with_name("as_nobody.py"))]


class CliResult(NamedTuple):
    rc: int
    out: Any  # str, or bytes with binary=True
    err: str

    def json(self) -> Any:
        """stdout as one JSON document."""
        return json.loads(self.out)

    def values(self) -> list[Any]:
        """Every JSON value on stdout, in order (lines or pretty-printed documents)."""
        decoder = json.JSONDecoder()
        text, pos, found = self.out, 0, []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                return found
            value, pos = decoder.raw_decode(text, pos)
            found.append(value)

    def document(self) -> Any:
        """The final JSON document (after any `status` lines, as `check --read-data`)."""
        *before, last = self.values()
        assert all(v.get("message_type") == "status" for v in before), before
        return last

    def lines(self) -> list[dict[str, Any]]:
        """stdout as JSON lines."""
        return json_lines(self.out)

    def summary(self) -> dict[str, Any]:
        """The `summary` line of a JSON-lines job (backup, restore)."""
        docs = [d for d in self.lines() if d.get("message_type") == "summary"]
        assert len(docs) == 1, f"expected one summary line in {self.out!r}"
        return docs[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_cli(
    args: list[str] | tuple[str, ...],
    env: dict[str, str],
    *,
    input: bytes | None = None,
    binary: bool = False,
    timeout: float = 180,
    cwd: str | os.PathLike[str] | None = None,
    command: list[str] | None = None,
) -> CliResult:
    """Run strongroom (or `command`, e.g. `nobody_command()`) with `args`."""
    proc = subprocess.run(
        [*(command or strongroom_command()), *args],
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
    )
    out = proc.stdout if binary else proc.stdout.decode("utf-8", "replace")
    return CliResult(proc.returncode, out, proc.stderr.decode("utf-8", "replace"))


def assert_one_line_error(result: CliResult, *needles: str, only: bool = False) -> str:
    """The failure is reported as exactly one `strongroom: error:` line, no traceback
    (and, with `only`, nothing else on stderr)."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert "Traceback" not in result.err, result.err
    if only:
        assert len(lines) == 1, f"expected a one-line message, got: {result.err!r}"
    errors = [line for line in lines if line.startswith("strongroom: error:")]
    assert len(errors) == 1, f"expected one error line, got: {result.err!r}"
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]
