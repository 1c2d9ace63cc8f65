"""Destinations that fail on purpose, for the crash tests of the VHD backup mode.

`Failing` wraps a real `VhdChain` and raises once, before or after the real
shipment. Run as a program (`python -m tests.protect.crashing SRC DEST STATE
SIZE before|after`), it does one cycle whose process is killed (SIGKILL, so no
handler runs) before or after the shipment: a real crash, for the next run to
settle.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from strongroom.errors import TransientStorageError
from strongroom.protect.destinations import Shipment, VhdChain
from strongroom.protect.vhd_mode import ProtectOptions
from strongroom.services.protect import protect_once
from strongroom.storage.local import LocalBackend


class Failing:
    """A folder chain whose `ship` calls `before()` and `after()` around the real one."""

    wants_vhd = True

    def __init__(self, folder: str, before: Callable[[], None], after: Callable[[], None]) -> None:
        self.inner = VhdChain(LocalBackend(folder))
        self.description = self.inner.description
        self.before, self.after = before, after
        self.shipped: list[int] = []

    def object_name(self, name: str, cycle: int) -> str:
        return self.inner.object_name(name, cycle)

    def absolute_path(self, name: str, cycle: int) -> str:
        return self.inner.absolute_path(name, cycle)

    def arrived(self, name: str, cycle: int, uuid: str) -> str | None:
        return self.inner.arrived(name, cycle, uuid)

    def ship(self, shipment: Shipment) -> str:
        self.before()
        where = self.inner.ship(shipment)
        self.shipped.append(shipment.cycle)
        self.after()
        return where

    def close(self) -> None:
        self.inner.close()


def fail_once(message: str) -> Callable[[], None]:
    calls = []

    def fail() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise TransientStorageError(message)

    return fail


def nothing() -> None:
    pass


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    src, dest, state, size, when = argv
    failing = Failing(
        dest, die if when == "before" else nothing, die if when == "after" else nothing
    )
    options = ProtectOptions(name=os.path.basename(src), size=int(size))
    protect_once(src, failing, options, state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
