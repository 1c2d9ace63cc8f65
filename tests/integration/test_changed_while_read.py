"""A file that changes while the backup reads it is reported as a warning.

A thread appends to the file every few milliseconds for the whole duration of
the backup process, so the file always changes between the walk's stat and the
end of its reading: deterministic without hooking into the program.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.tree import random_bytes, write_file


def test_file_changed_while_read_is_a_warning(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    growing = write_file(src / "growing.log", random_bytes(20 * 1024 * 1024, 1))
    write_file(src / "steady.txt", b"does not change\n")
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab", buffering=0) as f:
            while not stop.wait(0.002):
                f.write(b"another log line\n")

    writer = threading.Thread(target=append)
    writer.start()
    try:
        result = cli("backup", str(src), "--json")
    finally:
        stop.set()
        writer.join()

    assert result.rc == 0, result.err  # a warning, not a failure
    warnings = [d["message"] for d in result.lines() if d["message_type"] == "warning"]
    assert warnings == [f"{growing}: file changed while it was read"]
    summary = result.summary()
    assert summary["warnings"] == 1 and summary["unreadable"] == 0
    # The point holds the file (as read: at least its size when the backup began).
    dumped = cli("dump", "latest", str(growing), binary=True).out
    assert dumped.startswith(random_bytes(20 * 1024 * 1024, 1))
    assert growing.read_bytes().startswith(dumped)

    text = cli("backup", str(src), "--force")
    assert text.rc == 0
    assert text.err.strip() == "" or "changed while" not in text.err  # it stopped growing
