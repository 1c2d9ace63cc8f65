"""Library use cases for the CLI: create a virtual library, show a library's
status, move cartridges, and the operator's import/export.

Thin on purpose: the changers (media/) do the work and refuse with their own
reasons; this module opens the library by name (media/libraries.py) and
turns a status into plain rows the CLI prints or emits as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strongroom.config import Settings
from strongroom.errors import ChangerError
from strongroom.media.changer import Changer, ChangerStatus
from strongroom.media.libraries import open_library
from strongroom.media.virtual import Layout, VirtualLibrary


@dataclass(frozen=True)
class ElementRow:
    kind: str  # drive | slot | import/export
    address: int
    full: bool
    barcode: str | None
    loaded_from: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "address": self.address,
            "full": self.full,
            "barcode": self.barcode,
            "loaded_from": self.loaded_from,
        }


def create_virtual_library(
    name: str,
    *,
    slots: int,
    drives: int,
    import_export: int,
    capacity: int | None = None,
    cartridges: int = 0,
    prefix: str = "VT",
) -> list[ElementRow]:
    """A new virtual library; `cartridges` blank ones (PREFIX0001L8...) in the first slots."""
    layout = Layout(slots=slots, drives=drives, import_export=import_export)
    if capacity is not None:
        layout = Layout(slots, drives, import_export, capacity=capacity)
    labels: list[str | None] = [f"{prefix}{n:04d}L8" for n in range(1, cartridges + 1)]
    library = VirtualLibrary.create(name, layout, cartridges=labels)
    return rows(library.status())


def library_status(name: str, settings: Settings) -> list[ElementRow]:
    return rows(open_library(name, settings).status())


def move(name: str, settings: Settings, action: str, first: int, second: int | None) -> None:
    """`load SLOT DRIVE`, `unload DRIVE [SLOT]` or `transfer SOURCE DESTINATION`."""
    changer = open_library(name, settings)
    if action == "load":
        assert second is not None
        changer.load(first, second)
    elif action == "unload":
        changer.unload(first, second)
    else:
        assert second is not None
        changer.transfer(first, second)


def import_cartridges(
    name: str, settings: Settings, barcodes: Sequence[str], unlabelled: int = 0
) -> list[int]:
    """The import/export slots the cartridges were put in (virtual libraries:
    with a real one the operator opens the mail slot)."""
    return _virtual(open_library(name, settings)).import_cartridges(barcodes, unlabelled)


def export_cartridges(name: str, settings: Settings, barcodes: Sequence[str]) -> None:
    _virtual(open_library(name, settings)).export_cartridges(barcodes)


def rows(status: ChangerStatus) -> list[ElementRow]:
    return [
        ElementRow(e.kind.value, e.address, e.full, e.barcode, e.loaded_from)
        for e in status.elements()
    ]


def _virtual(changer: Changer) -> VirtualLibrary:
    if not isinstance(changer, VirtualLibrary):
        raise ChangerError(
            f"{changer.name} is a real library: put cartridges in or take them out "
            "at its import/export slots, then run a status"
        )
    return changer
