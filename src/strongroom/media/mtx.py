"""A SCSI changer driven by the `mtx` program (Debian's `mtx` package).

Every call runs `mtx -f DEVICE ...` with a timeout (a robot that hangs must
not hang a backup) and no shell. mtx reports a refused move on stderr as one
line (`Storage Element 3 is Already Full`) and exits 1: that line (without a
`mtx: ` prefix, should a build add one) is the ChangerError's message, so
the user reads mtx's own reason.

`status` is `mtx status` (parsed by mtx_status.py): it reads the element
status the changer already holds and moves nothing. `scan` is
`mtx inventory`, which makes the robot read every barcode again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from strongroom.config import child_environment
from strongroom.errors import ChangerError
from strongroom.media.changer import ChangerStatus
from strongroom.media.device import open_device
from strongroom.media.drive import DEFAULT_RECORD_SIZE, Drive
from strongroom.media.mtx_status import parse_status

DEFAULT_TIMEOUT = 600.0  # a load with a tape thread can take minutes on big libraries
MAX_OUTPUT = 4 << 20


class MtxChanger:
    """The changer at `device` (a /dev/sg* or /dev/tape/by-id path) through mtx.

    `drives`: the tape devices (/dev/nst*) of the changer's drives, by drive
    number, for `drive()` (a regular file or a symlink to one opens as a
    cartridge file: media/device.py); `mtx`: the program to run."""

    def __init__(
        self,
        name: str,
        device: str,
        *,
        drives: Sequence[str] = (),
        mtx: str = "mtx",
        timeout: float = DEFAULT_TIMEOUT,
        record_size: int = DEFAULT_RECORD_SIZE,
    ) -> None:
        self.name = name
        self.device = device
        self.drives = list(drives)
        self.mtx = mtx
        self.timeout = timeout
        self.record_size = record_size

    def status(self) -> ChangerStatus:
        return parse_status(self._run("status"))[1]

    def scan(self) -> None:
        self._run("inventory")

    def load(self, slot: int, drive: int) -> None:
        self._run("load", str(slot), str(drive))

    def unload(self, drive: int, slot: int | None = None) -> None:
        if slot is None:
            slot = self.status().origin(drive, self.name)
        self._run("unload", str(slot), str(drive))

    def transfer(self, source: int, destination: int) -> None:
        self._run("transfer", str(source), str(destination))

    def eepos(self, position: int, command: str, *args: int) -> None:
        """A move with the import/export port's tray set: 0 leave, 1 retract,
        2 extend (mtx's `eepos` prefix, for libraries with a mail slot tray)."""
        if position not in (0, 1, 2):
            raise ChangerError(f"eepos must be 0, 1 or 2, not {position}")
        self._run("eepos", str(position), command, *map(str, args))

    def drive(self, address: int) -> Drive:
        if not 0 <= address < len(self.drives):
            raise ChangerError(
                f"{self.name}: no tape device configured for drive {address} "
                f"(the library's `drives` list has {len(self.drives)})"
            )
        return open_device(self.drives[address], self.record_size)

    def _run(self, *args: str) -> str:
        command = [self.mtx, "-f", self.device, *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                timeout=self.timeout,
                env=child_environment(),
                check=False,
            )
        except FileNotFoundError:
            raise ChangerError(f"{self.mtx}: not found (install the mtx package)") from None
        except subprocess.TimeoutExpired:
            raise ChangerError(
                f"mtx {args[0]} on {self.device}: no answer within {self.timeout:g} s"
            ) from None
        except OSError as err:
            raise ChangerError(f"{self.mtx}: {err.strerror}") from None
        out = done.stdout[:MAX_OUTPUT].decode("utf-8", "replace")
        if done.returncode != 0:
            raise ChangerError(_reason(done.stderr, out, args[0], done.returncode))
        return out


def _reason(stderr: bytes, stdout: str, action: str, code: int) -> str:
    """mtx's own message: the last non-empty line it printed on stderr (else
    stdout), without its `mtx: ` prefix."""
    for text in (stderr[:MAX_OUTPUT].decode("utf-8", "replace"), stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            line = lines[-1]
            if line.startswith("mtx: "):
                line = line[5:]
            return line[:300]
    return f"mtx {action} failed (exit status {code})"
