"""The virtual library beyond the contract: import/export through the mail
slots, the shelf (known media removed and returned), its state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.errors import ChangerError, MediaNotFound, NoMedium
from strongroom.media.changer import ElementKind
from strongroom.media.drive import Position
from strongroom.media.virtual import Layout, VirtualLibrary
from tests.media.conftest import make_virtual


def test_import_then_operator_move_into_storage(tmp_path: Path) -> None:
    lib = VirtualLibrary.create(
        "v", Layout(slots=3, drives=1, import_export=2), root=tmp_path / "v"
    )
    assert lib.import_cartridges(["NEW001L8"], unlabelled=1) == [4, 5]
    status = lib.status()
    assert [(s.address, s.kind, s.barcode, s.full) for s in status.slots[3:]] == [
        (4, ElementKind.IMPORT_EXPORT, "NEW001L8", True),
        (5, ElementKind.IMPORT_EXPORT, None, True),
    ]
    assert lib.moves == 0  # the operator put them there, not the robot
    lib.transfer(4, 1)
    assert lib.status().slot(1).barcode == "NEW001L8" and lib.moves == 1
    with pytest.raises(ChangerError, match="3 cartridges and 1 free import/export slots"):
        lib.import_cartridges(["A", "B", "C"])
    with pytest.raises(ChangerError, match="already in the library"):
        lib.import_cartridges(["NEW001L8"])
    with pytest.raises(ChangerError, match="barcode"):
        lib.import_cartridges(["BAD:CODE"])


def test_export_keeps_the_cartridge_to_import_it_back(tmp_path: Path) -> None:
    lib = make_virtual(tmp_path).changer
    assert isinstance(lib, VirtualLibrary)
    lib.load(2, 0)
    with lib.drive(0) as d:  # type: ignore[attr-defined]
        d.write_record(b"x" * 4096)
        d.write_filemark()
    lib.unload(0)
    with pytest.raises(ChangerError, match="not enough free import/export slots"):
        lib.export_cartridges(["A00001L8", "A00002L8"])  # only slot 8 is free, 7 is full
    lib.export_cartridges(["A00002L8", "A00007L8"])
    status = lib.status()
    assert status.where("A00002L8") is None and status.where("A00007L8") is None
    assert not status.slot(2).full and not status.slot(8).full
    assert lib.moves == 3  # load, unload, and the robot's move of A00002L8 to a mail slot
    with pytest.raises(MediaNotFound):
        lib.export_cartridges(["A00002L8"])
    lib.import_cartridges(["A00002L8"])
    slot = lib.status().where("A00002L8")
    assert slot is not None and slot.kind is ElementKind.IMPORT_EXPORT
    lib.load(slot.address, 1)
    with lib.drive(1) as d:  # type: ignore[attr-defined]
        assert d.read_record() == b"x" * 4096  # the same cartridge, data and all
        assert d.read_record() is None
        assert d.position() == Position(1, 0)


def test_export_refuses_a_cartridge_in_a_drive(tmp_path: Path) -> None:
    lib = make_virtual(tmp_path).changer
    assert isinstance(lib, VirtualLibrary)
    lib.load(1, 0)
    with pytest.raises(ChangerError, match="A00001L8 is in drive 0: unload it first"):
        lib.export_cartridges(["A00001L8"])
    with pytest.raises(NoMedium):
        lib.drive(1)


def test_state_is_shared_and_checked(tmp_path: Path) -> None:
    lib = make_virtual(tmp_path).changer
    lib.load(1, 0)
    again = VirtualLibrary("vlib", tmp_path / "vlib")
    assert again.status().drive(0).barcode == "A00001L8"
    state = tmp_path / "vlib" / "state.json"
    doc = json.loads(state.read_text())
    doc["slots"][5] = doc["drives"][0]["id"]  # one cartridge in two places
    state.write_text(json.dumps(doc))
    with pytest.raises(ChangerError, match="damaged: the elements and the cartridges disagree"):
        again.status()
    state.write_text("{")
    with pytest.raises(ChangerError, match="is damaged"):
        again.status()


def test_create_refusals(tmp_path: Path) -> None:
    with pytest.raises(ChangerError, match="--slots"):
        VirtualLibrary.create("v", Layout(slots=0, drives=1, import_export=0), root=tmp_path / "v")
    with pytest.raises(ChangerError, match="library name"):
        VirtualLibrary.create("../x", Layout(slots=1, drives=1, import_export=0))
    VirtualLibrary.create("v", Layout(slots=2, drives=1, import_export=0), root=tmp_path / "v")
    with pytest.raises(ChangerError, match="already exists"):
        VirtualLibrary.create("v", Layout(slots=2, drives=1, import_export=0), root=tmp_path / "v")
    with pytest.raises(MediaNotFound):
        VirtualLibrary("w", tmp_path / "w")
    with pytest.raises(ChangerError, match="no slot 9"):
        VirtualLibrary("v", tmp_path / "v").load(9, 0)
