"""Fixtures: the same small library as each changer kind (the stand-in mtx,
a changer script, the virtual library), with a way to count robot moves.

The layout every kind gets: drives 0 and 1 (empty), storage slots 1-6, import/
export slots 7-8; A00001L8..A00004L8 in slots 1-4, a cartridge without a
barcode in slot 5, A00007L8 in the import/export slot 7.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.media.changer import Changer
from strongroom.media.mtx import MtxChanger
from strongroom.media.script_changer import ScriptChanger
from strongroom.media.virtual import Layout, VirtualLibrary

HERE = Path(__file__).parent
FAKE_MTX = HERE / "fake_mtx.py"
FILE_CHANGER = HERE / "file_changer.sh"
FIXTURES = HERE / "fixtures" / "mtx"
SLOTS: list[str | None] = ["A00001L8", "A00002L8", "A00003L8", "A00004L8", None, None]
IMPORT_EXPORT: list[str | None] = ["A00007L8", None]
DRIVES = 2


@dataclass
class Library:
    changer: Changer
    moves: Callable[[], int]


def mtx_program(tmp_path: Path) -> str:
    """A wrapper that runs the stand-in mtx with this interpreter."""
    wrapper = tmp_path / "mtx"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_MTX}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def mtx_state(path: Path, slots: list[str | None], ie: int, drives: int = DRIVES) -> None:
    path.write_text(
        json.dumps(
            {
                "drives": [None] * drives,
                "slots": [
                    None if t is None and i >= 5 else {"tag": t} for i, t in enumerate(slots)
                ],
                "import_export": ie,
                "moves": 0,
            }
        )
    )


def make_mtx(tmp_path: Path) -> Library:
    state = tmp_path / "sg3.json"
    mtx_state(state, [*SLOTS, *IMPORT_EXPORT], len(IMPORT_EXPORT))
    changer = MtxChanger("tape", str(state), mtx=mtx_program(tmp_path), timeout=30)
    return Library(changer, lambda: int(json.loads(state.read_text())["moves"]))


def make_script(tmp_path: Path) -> Library:
    control = tmp_path / "changer"
    control.mkdir()
    lines = [f"D:{d}:E" for d in range(DRIVES)]
    for n, tag in enumerate([*SLOTS, *IMPORT_EXPORT], 1):
        letter = "S" if n <= len(SLOTS) else "I"
        full = tag is not None or n == 5
        lines.append(f"{letter}:{n}:F:{tag or ''}" if full else f"{letter}:{n}:E")
    (control / "inventory").write_text("\n".join(lines) + "\n")
    changer = ScriptChanger("disks", str(FILE_CHANGER), str(control), timeout=30)

    def moves() -> int:
        path = control / "moves"
        return int(path.read_text()) if path.exists() else 0

    return Library(changer, moves)


def make_virtual(tmp_path: Path) -> Library:
    library = VirtualLibrary.create(
        "vlib",
        Layout(
            slots=len(SLOTS),
            drives=DRIVES,
            import_export=len(IMPORT_EXPORT),
            capacity=1 << 20,
            record_size=4096,
        ),
        root=tmp_path / "vlib",
        cartridges=SLOTS[:5],
    )
    library.import_cartridges(["A00007L8"])
    return Library(library, lambda: library.moves)


KINDS = {"mtx": make_mtx, "script": make_script, "virtual": make_virtual}


@pytest.fixture(params=list(KINDS))
def library(request: pytest.FixtureRequest, tmp_path: Path) -> Library:
    return KINDS[request.param](tmp_path)
