"""What every changer is to the rest of strongroom: a status with no cartridge
moved, and the moves (load, unload, transfer).

Numbering follows mtx and the Bareos changer-script interface, so that a slot
number means the same thing in our output, in `mtx status` and in an
operator's head: storage and import/export slots are numbered from 1 in one
sequence (mtx counts import/export elements among its "Slots"), drives from 0.

Barcodes are the changer's volume tags with the SCSI field's space padding
removed; a cartridge with no readable tag has `barcode=None` (never ""), so a
missing label can never compare equal to another missing label.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from strongroom.errors import ChangerError
from strongroom.media.drive import Drive

MAX_BARCODE = 32  # the SCSI volume tag field's length


class ElementKind(enum.StrEnum):
    SLOT = "slot"
    IMPORT_EXPORT = "import/export"
    DRIVE = "drive"


@dataclass(frozen=True)
class Element:
    """One place of a changer and what is in it.

    `address`: the slot number (from 1) or the drive number (from 0).
    `loaded_from`: for a full drive, the slot its cartridge came from, None
    when the changer does not know (mtx's "Unknown Storage Element Loaded").
    """

    kind: ElementKind
    address: int
    full: bool
    barcode: str | None = None
    alternate_barcode: str | None = None
    loaded_from: int | None = None

    @property
    def is_drive(self) -> bool:
        return self.kind is ElementKind.DRIVE


@dataclass(frozen=True)
class ChangerStatus:
    """A changer's contents at one moment (`Changer.status`)."""

    drives: tuple[Element, ...]
    slots: tuple[Element, ...]  # storage and import/export, by address

    def elements(self) -> Iterator[Element]:
        yield from self.drives
        yield from self.slots

    def slot(self, address: int) -> Element:
        for element in self.slots:
            if element.address == address:
                return element
        raise KeyError(address)

    def drive(self, address: int) -> Element:
        for element in self.drives:
            if element.address == address:
                return element
        raise KeyError(address)

    def where(self, barcode: str) -> Element | None:
        """The element holding the cartridge with this barcode (a drive counts)."""
        for element in self.elements():
            if element.full and element.barcode == barcode:
                return element
        return None

    def free_slots(self, kind: ElementKind = ElementKind.SLOT) -> list[int]:
        return [e.address for e in self.slots if e.kind is kind and not e.full]

    def origin(self, drive: int, changer: str) -> int:
        """The slot the drive's cartridge came from (where `unload` puts it
        back), refused with mtx's own words when the drive is empty or the
        changer does not know."""
        try:
            element = self.drive(drive)
        except KeyError:
            raise ChangerError(f"{changer}: no drive {drive}") from None
        if not element.full:
            raise ChangerError(f"Data Transfer Element {drive} is Empty")
        if element.loaded_from is None:
            raise ChangerError(f"No Source for tape in drive {drive}!")
        return element.loaded_from


class Changer(Protocol):
    """A library's robot. Every method raises ChangerError (errors.py) with the
    changer's own one-line reason when a move is refused or fails; none of them
    leaves a cartridge anywhere but where the changer reports it afterwards."""

    name: str

    def status(self) -> ChangerStatus:
        """Every element's state and barcode, from what the changer already
        knows: no cartridge moves (`mtx status`, the script's `listall`)."""
        ...

    def scan(self) -> None:
        """Ask the robot to read every barcode again (`mtx inventory`); a no-op
        where the changer has nothing to rescan."""
        ...

    def load(self, slot: int, drive: int) -> None: ...

    def unload(self, drive: int, slot: int | None = None) -> None:
        """Put the drive's cartridge in `slot`, or back where it came from."""
        ...

    def transfer(self, source: int, destination: int) -> None:
        """Move a cartridge between two slots (import/export included)."""
        ...

    def drive(self, address: int) -> Drive:
        """The drive at `address`, to read and write the cartridge loaded in it."""
        ...
