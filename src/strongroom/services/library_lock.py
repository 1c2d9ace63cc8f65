"""One job at a time on a library's cartridges and drives.

An inventory, a labelling, a copy to media and a restore from media each move
cartridges and use drives; two at once would unload a cartridge the other is
reading. Each takes this lock for its whole run (at its entry point only:
`flock` locks belong to an open file, so a nested take would wait for itself).
The lock file is in the virtual library's own folder, else in the data folder.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from strongroom.config import data_home
from strongroom.errors import MediaError
from strongroom.media.changer import Changer
from strongroom.media.virtual import VirtualLibrary

LOCK_WAIT = 60.0  # seconds a labelling or a copy waits for another job on the library


def lock_path(changer: Changer) -> Path:
    """The virtual library's folder, else the data folder."""
    if isinstance(changer, VirtualLibrary):
        return changer.root / "jobs.lock"
    return data_home() / "strongroom" / "libraries" / f"{changer.name}.lock"


@contextmanager
def library_lock(changer: Changer, wait: float = 0.0) -> Iterator[None]:
    """Exclusive use of the library's cartridges for one job (an inventory,
    a copy to media, a restore): waits up to `wait` seconds, then fails with
    one line."""
    path = lock_path(changer)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MediaError(
                        f"library {changer.name} is busy: another job (inventory, copy, "
                        "restore) is using it; try again later or give --wait SECONDS"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
