"""A changer driven by a changer script in the Bareos/Bacula interface.

Bareos's `Changer Command = "mtx-changer %c %o %S %a %d"` runs

    SCRIPT CTRL-DEVICE COMMAND SLOT ARCHIVE-DEVICE DRIVE

with slots numbered from 1 and drives from 0, and a non-zero exit status
meaning failure. So the many existing scripts (Bareos's mtx-changer,
disk-changer, site-made ones for odd robots) work here unchanged:

- `listall` prints `D:<drive>:F:<slot>:<vol>` | `D:<drive>:E`, `S:<slot>:F:<vol>` |
  `S:<slot>:E`, `I:<slot>:F:<vol>` | `I:<slot>:E` (I: import/export); that is
  `status`. The volume may keep the SCSI field's padding (mtx-changer keeps
  it): it is stripped; an empty one is None.
- `load`/`unload` take the slot and the drive; `transfer` takes the
  destination slot in the ARCHIVE-DEVICE position (as mtx-changer does).
- `list`, `slots` and `loaded` are part of the interface too (`loaded` and
  `slots` are used by `loaded_slot` and `slot_count`).

A refused move's reason is the script's last line on stderr (else stdout).
Every call has a timeout; the output is bounded and checked line by line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from strongroom.config import child_environment
from strongroom.errors import ChangerError
from strongroom.media.changer import MAX_BARCODE, ChangerStatus, Element, ElementKind
from strongroom.media.device import open_device
from strongroom.media.drive import DEFAULT_RECORD_SIZE, Drive

DEFAULT_TIMEOUT = 600.0
MAX_OUTPUT = 4 << 20
MAX_LINES = 20_000
MAX_ADDRESS = 65_535


class ScriptChanger:
    """The changer `control` (the script's CTRL-DEVICE: a /dev/sg*, or a
    disk-changer's configuration) run through `script`.

    `drives`: the drives' archive devices, by drive number (passed as
    ARCHIVE-DEVICE, and what `drive()` opens)."""

    def __init__(
        self,
        name: str,
        script: str,
        control: str,
        *,
        drives: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        record_size: int = DEFAULT_RECORD_SIZE,
    ) -> None:
        self.name = name
        self.script = script
        self.control = control
        self.drives = list(drives)
        self.timeout = timeout
        self.record_size = record_size

    def status(self) -> ChangerStatus:
        return parse_listall(self._run("listall", 0, 0))

    def scan(self) -> None:
        """The script interface has no rescan: `listall` reads what the robot knows."""

    def load(self, slot: int, drive: int) -> None:
        self._run("load", slot, drive)

    def unload(self, drive: int, slot: int | None = None) -> None:
        if slot is None:
            slot = self.status().origin(drive, self.name)
        self._run("unload", slot, drive)

    def transfer(self, source: int, destination: int) -> None:
        self._run("transfer", source, 0, archive=str(destination))

    def loaded_slot(self, drive: int) -> int | None:
        """The slot whose cartridge is in `drive` (`loaded`), None when empty."""
        text = self._run("loaded", 0, drive).strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 6:
            raise ChangerError(f"{self.script} loaded: {text[:40]!r} is not a slot number")
        return int(text) or None

    def slot_count(self) -> int:
        text = self._run("slots", 0, 0).strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 6:
            raise ChangerError(f"{self.script} slots: {text[:40]!r} is not a number")
        return int(text)

    def drive(self, address: int) -> Drive:
        if not 0 <= address < len(self.drives):
            raise ChangerError(
                f"{self.name}: no archive device configured for drive {address} "
                f"(the library's `drives` list has {len(self.drives)})"
            )
        return open_device(self.drives[address], self.record_size)

    def _run(self, command: str, slot: int, drive: int, archive: str | None = None) -> str:
        if archive is None:
            archive = self.drives[drive] if 0 <= drive < len(self.drives) else ""
        argv = [self.script, self.control, command, str(slot), archive, str(drive)]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=self.timeout,
                env=child_environment(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ChangerError(
                f"{self.script} {command}: no answer within {self.timeout:g} s"
            ) from None
        except OSError as err:
            raise ChangerError(f"{self.script}: {err.strerror}") from None
        out = done.stdout[:MAX_OUTPUT].decode("utf-8", "replace")
        if done.returncode != 0:
            raise ChangerError(_reason(done.stderr, out, self.script, command, done.returncode))
        return out


def parse_listall(text: str) -> ChangerStatus:
    """A `listall` output as a ChangerStatus (ChangerError naming the first
    line that is not in the interface's format)."""
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise ChangerError(f"listall: more than {MAX_LINES} lines")
    drives: dict[int, Element] = {}
    slots: dict[int, Element] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        element = _element(line, number)
        target = drives if element.is_drive else slots
        if element.address in target:
            raise ChangerError(f"listall line {number}: element {element.address} twice")
        target[element.address] = element
    return ChangerStatus(
        drives=tuple(drives[a] for a in sorted(drives)),
        slots=tuple(slots[a] for a in sorted(slots)),
    )


def _element(line: str, number: int) -> Element:
    bad = ChangerError(f"listall line {number} is not D:/S:/I: format: {line[:80]!r}")
    if len(line) > 512:
        raise bad
    kind_letter, _, rest = line.partition(":")
    if kind_letter == "D":
        fields = rest.split(":", 3)
        address = _address(fields[0], bad)
        if fields[1:] == ["E"]:
            return Element(ElementKind.DRIVE, address, False)
        if len(fields) < 3 or fields[1] != "F":
            raise bad
        origin = fields[2].strip()
        loaded_from = (
            _address(origin, bad) if origin.isascii() and origin.isdigit() and int(origin) else None
        )
        barcode = _barcode(fields[3] if len(fields) > 3 else "", bad)
        return Element(ElementKind.DRIVE, address, True, barcode, loaded_from=loaded_from)
    if kind_letter in ("S", "I"):
        kind = ElementKind.SLOT if kind_letter == "S" else ElementKind.IMPORT_EXPORT
        fields = rest.split(":", 2)
        address = _address(fields[0], bad)
        if address < 1:
            raise bad
        if fields[1:] == ["E"]:
            return Element(kind, address, False)
        if len(fields) < 2 or fields[1] != "F":
            raise bad
        return Element(kind, address, True, _barcode(fields[2] if len(fields) > 2 else "", bad))
    raise bad


def _address(text: str, bad: ChangerError) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 6 or int(text) > MAX_ADDRESS:
        raise bad
    return int(text)


def _barcode(text: str, bad: ChangerError) -> str | None:
    tag = text.strip()
    if not tag:
        return None
    if len(tag) > MAX_BARCODE or not tag.isascii() or not tag.isprintable():
        raise bad
    return tag


def _reason(stderr: bytes, stdout: str, script: str, command: str, code: int) -> str:
    for text in (stderr[:MAX_OUTPUT].decode("utf-8", "replace"), stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return f"{script} {command} failed (exit status {code})"
