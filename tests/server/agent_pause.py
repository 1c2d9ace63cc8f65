"""Run strongroom, but hold it when it first opens a file whose name starts
with PREFIX, until the file GO exists (the test kills a server meanwhile).

    python agent_pause.py PREFIX READY GO ARGS...

An audit hook (sys.addaudithook) sees every `open`, `os.open` included: the
opening thread writes READY and waits; the agent's other threads (its
uploads) go on.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def main() -> int:
    prefix, ready, go, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    held = [False]

    def hook(event: str, info: tuple[Any, ...]) -> None:
        if held[0] or event != "open" or not info or not isinstance(info[0], (str, bytes)):
            return
        if not os.path.basename(os.fsdecode(info[0])).startswith(prefix):
            return
        held[0] = True
        with open(ready, "w") as f:
            f.write(str(os.getpid()))
        while not os.path.exists(go):
            time.sleep(0.02)

    sys.addaudithook(hook)
    from strongroom.cli.main import main as strongroom

    return strongroom(args)


if __name__ == "__main__":
    sys.exit(main())
