"""The changer contract, run against every kind (conftest.py's `library`):
the stand-in mtx, a changer script, the virtual library."""

from __future__ import annotations

import pytest

from strongroom.errors import ChangerError
from strongroom.media.changer import ChangerStatus, ElementKind
from tests.media.conftest import Library


def layout(status: ChangerStatus) -> dict[str, object]:
    """Everything where it is: comparable across calls."""
    return {
        "drives": [(e.address, e.full, e.barcode, e.loaded_from) for e in status.drives],
        "slots": [(e.address, e.kind.value, e.full, e.barcode) for e in status.slots],
    }


def test_status_lists_what_is_where_and_moves_nothing(library: Library) -> None:
    status = library.changer.status()
    assert [(e.address, e.full) for e in status.drives] == [(0, False), (1, False)]
    assert [(e.address, e.kind, e.full, e.barcode) for e in status.slots] == [
        (1, ElementKind.SLOT, True, "A00001L8"),
        (2, ElementKind.SLOT, True, "A00002L8"),
        (3, ElementKind.SLOT, True, "A00003L8"),
        (4, ElementKind.SLOT, True, "A00004L8"),
        (5, ElementKind.SLOT, True, None),
        (6, ElementKind.SLOT, False, None),
        (7, ElementKind.IMPORT_EXPORT, True, "A00007L8"),
        (8, ElementKind.IMPORT_EXPORT, False, None),
    ]
    assert status.where("A00003L8") == status.slot(3)
    assert status.free_slots() == [6]
    assert status.free_slots(ElementKind.IMPORT_EXPORT) == [8]
    before = library.moves()
    library.changer.scan()
    assert layout(library.changer.status()) == layout(status)
    assert library.moves() == before


def test_load_and_unload_back_to_origin(library: Library) -> None:
    changer = library.changer
    before = layout(changer.status())
    changer.load(3, 1)
    status = changer.status()
    assert library.moves() == 1
    drive = status.drive(1)
    assert (drive.full, drive.barcode, drive.loaded_from) == (True, "A00003L8", 3)
    assert not status.slot(3).full
    assert not status.drive(0).full
    changer.unload(1)
    assert library.moves() == 2
    assert layout(changer.status()) == before


def test_unload_to_another_slot_and_transfer(library: Library) -> None:
    changer = library.changer
    changer.load(5, 0)  # the cartridge without a barcode
    assert changer.status().drive(0).full
    changer.unload(0, 6)
    status = changer.status()
    assert status.slot(6).full and status.slot(6).barcode is None and not status.slot(5).full
    changer.transfer(7, 5)  # from the import/export slot into storage
    status = changer.status()
    assert status.slot(5).barcode == "A00007L8" and not status.slot(7).full
    assert library.moves() == 3


@pytest.mark.parametrize(
    ("move", "reason"),
    [
        (lambda c: c.load(6, 0), "6"),  # empty source slot
        (lambda c: c.unload(0, 6), "0"),  # empty drive
        (lambda c: c.transfer(6, 8), "6"),  # empty source
        (lambda c: c.transfer(1, 2), "2"),  # full destination
    ],
)
def test_refusals_name_the_element_and_move_nothing(library: Library, move, reason) -> None:  # type: ignore[no-untyped-def]
    before = layout(library.changer.status())
    with pytest.raises(ChangerError, match=reason) as caught:
        move(library.changer)
    assert "\n" not in str(caught.value) and str(caught.value)
    assert layout(library.changer.status()) == before
    assert library.moves() == 0


def test_full_drive_and_full_slot_refused(library: Library) -> None:
    changer = library.changer
    changer.load(1, 0)
    loaded = layout(changer.status())
    with pytest.raises(ChangerError, match=r"0|[Ff]ull|loaded"):
        changer.load(2, 0)
    with pytest.raises(ChangerError, match="2"):
        changer.unload(0, 2)
    assert layout(changer.status()) == loaded
    assert library.moves() == 1
