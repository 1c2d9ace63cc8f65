"""Run strongroom, but freeze it when it opens a chosen file for the Nth time.

    python pause_at_open.py PREFIX N READY ARGS...

An audit hook (sys.addaudithook, a public and stable Python mechanism) sees
every `open`; on the Nth open of a path starting with PREFIX it creates the
file READY and sleeps for ever, so that a test can SIGKILL the process at a
known point of its work (e.g. copy-to-media between two packs: the session
header and the first pack are on the cartridge, its catalog is not).
`kill_at_open` does all of it from a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def kill_at_open(
    prefix: str, count: int, args: list[str], env: dict[str, str], ready: Path
) -> None:
    """Run `strongroom ARGS` until it opens a path under `prefix` for the
    `count`th time, then SIGKILL it there (fails the test if it ends first or
    never gets there within a minute); `ready`: a free path for the signal file."""
    proc = subprocess.Popen(
        [sys.executable, __file__, prefix, str(count), str(ready), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"strongroom never opened {prefix} {count} times"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def main() -> int:
    prefix, count, ready, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    seen = [0]

    def hook(event: str, info: tuple[Any, ...]) -> None:
        if event != "open" or not info or not isinstance(info[0], (str, bytes)):
            return
        path = os.fsdecode(info[0])
        if not path.startswith(prefix):
            return
        seen[0] += 1
        if seen[0] == count:
            with open(ready + ".tmp", "w") as f:  # re-enters the hook: harmless
                f.write(str(os.getpid()))
            os.rename(ready + ".tmp", ready)
            while True:
                time.sleep(60)

    sys.addaudithook(hook)
    from strongroom.cli.main import main as strongroom

    return strongroom(args)


if __name__ == "__main__":
    sys.exit(main())
