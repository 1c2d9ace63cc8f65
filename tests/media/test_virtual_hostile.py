"""The virtual library against interruptions and a tampered folder: a
process killed between moving a cartridge's file and rewriting state.json
(export and import), a state file fuzzed by hypothesis, a symlink planted
where a cartridge file should be."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import strongroom.media.virtual as virtual
from strongroom.errors import DriveError, MediaError
from strongroom.media.virtual import Layout, VirtualLibrary

RECORD = 4096
LAYOUT = Layout(slots=3, drives=1, import_export=1, capacity=1 << 20, record_size=RECORD)


class Killed(BaseException):
    """The process dies here (nothing after it runs)."""


def _library(tmp_path: Path) -> VirtualLibrary:
    lib = VirtualLibrary.create("v", LAYOUT, root=tmp_path / "v", cartridges=["A00001L8"])
    lib.load(1, 0)
    with lib.drive(0) as drive:
        drive.write_record(b"x" * RECORD)
        drive.write_filemark()
    lib.unload(0)
    return lib


def _kill_state_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def die(_folder: Path, _state: object) -> None:
        raise Killed()

    monkeypatch.setattr(virtual, "_write_state", die)


def _data(lib: VirtualLibrary) -> bytes | None:
    lib.load(1, 0)
    with lib.drive(0) as drive:
        record = drive.read_record()
    lib.unload(0)
    return record


def test_killed_during_an_export_the_cartridge_is_still_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = _library(tmp_path)
    with monkeypatch.context() as m:
        _kill_state_writes(m)
        with pytest.raises(Killed):
            lib.export_cartridges(["A00001L8"])  # file moved to outside/, state not rewritten
    again = VirtualLibrary("v", tmp_path / "v")
    assert again.status().where("A00001L8") is not None  # the state still has it in slot 1
    assert _data(again) == b"x" * RECORD
    again.export_cartridges(["A00001L8"])  # and the export can be done again
    assert again.status().where("A00001L8") is None


def test_killed_during_an_import_the_import_can_be_done_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = _library(tmp_path)
    lib.export_cartridges(["A00001L8"])
    with monkeypatch.context() as m:
        _kill_state_writes(m)
        with pytest.raises(Killed):
            lib.import_cartridges(["A00001L8"])  # file back in cartridges/, state says outside
    again = VirtualLibrary("v", tmp_path / "v")
    assert again.import_cartridges(["A00001L8"]) == [4]
    again.transfer(4, 1)
    assert _data(again) == b"x" * RECORD


def test_a_cartridge_file_missing_everywhere_is_one_line(tmp_path: Path) -> None:
    lib = _library(tmp_path)
    lib.export_cartridges(["A00001L8"])
    [tape] = (tmp_path / "v" / "outside").iterdir()
    tape.unlink()
    with pytest.raises(MediaError, match="missing"):
        lib.import_cartridges(["A00001L8"])


def test_a_symlink_planted_for_a_cartridge_is_refused(tmp_path: Path) -> None:
    """The drive writes only to the library's own cartridge files: a link
    put in their place (to another file that happens to be a tape, or to
    anything else) is refused before any byte is written."""
    lib = _library(tmp_path)
    [tape] = (tmp_path / "v" / "cartridges").iterdir()
    elsewhere = tmp_path / "elsewhere.tape"
    os.replace(tape, elsewhere)
    before = elsewhere.read_bytes()
    tape.symlink_to(elsewhere)
    lib.load(1, 0)
    with pytest.raises(DriveError, match="symbolic link"):
        lib.drive(0)
    assert elsewhere.read_bytes() == before


_VALUES = st.none() | st.booleans() | st.integers(-3, 2**70) | st.text(max_size=40)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(
        [
            "format",
            "capacity",
            "record_size",
            "storage_slots",
            "drives",
            "slots",
            "cartridges",
            "outside",
            "moves",
        ]
    ),
    _VALUES | st.lists(_VALUES, max_size=4) | st.dictionaries(st.text(max_size=33), _VALUES),
)
def test_fuzz_a_hand_edited_state_is_refused_as_a_whole(
    tmp_path: Path, key: str, value: object
) -> None:
    folder = tmp_path / f"fuzz-{os.getpid()}"
    if not (folder / "state.json").exists():
        VirtualLibrary.create("f", LAYOUT, root=folder, cartridges=["A00001L8"])
    good = (folder / "state.json").read_bytes()
    try:
        state = json.loads(good)
        state[key] = value
        (folder / "state.json").write_text(json.dumps(state))
        lib = VirtualLibrary("f", folder)
        for action in (lib.status, lambda: lib.load(1, 0), lambda: lib.drive(0).close()):
            try:
                action()
            except MediaError:
                pass
    finally:
        (folder / "state.json").write_bytes(good)
