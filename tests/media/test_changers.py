"""What each changer kind does beyond the shared contract: mtx's own texts
and failures, the script interface's other commands, hostile listall."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from strongroom.errors import ChangerError
from strongroom.media.mtx import MtxChanger
from strongroom.media.script_changer import ScriptChanger, parse_listall
from tests.media.conftest import FILE_CHANGER, make_mtx, make_script, mtx_program


def test_mtx_refusal_is_mtx_own_line(tmp_path: Path) -> None:
    lib = make_mtx(tmp_path)
    with pytest.raises(ChangerError) as caught:
        lib.changer.transfer(1, 2)
    assert str(caught.value) == "Destination Element Address 2 is Already Full"
    lib.changer.load(1, 0)
    with pytest.raises(ChangerError) as caught:
        lib.changer.unload(0, 2)
    assert str(caught.value) == "Storage Element 2 is Already Full"
    with pytest.raises(ChangerError) as caught:
        lib.changer.unload(1, 6)
    assert str(caught.value) == "Data Transfer Element 1 is Empty"
    with pytest.raises(ChangerError) as caught:
        lib.changer.transfer(6, 8)
    assert str(caught.value) == "Source Element Address 6 is Empty"


def test_mtx_inventory_moves_nothing_and_eepos(tmp_path: Path) -> None:
    lib = make_mtx(tmp_path)
    assert isinstance(lib.changer, MtxChanger)
    lib.changer.scan()
    state = json.loads((tmp_path / "sg3.json").read_text())
    assert (state["inventories"], state["moves"]) == (1, 0)
    lib.changer.eepos(1, "transfer", 7, 6)
    assert lib.changer.status().slot(6).barcode == "A00007L8"
    with pytest.raises(ChangerError, match="0, 1 or 2"):
        lib.changer.eepos(3, "transfer", 6, 7)


def test_mtx_unload_with_unknown_origin_needs_a_slot(tmp_path: Path) -> None:
    state = tmp_path / "sg3.json"
    doc = {"drives": [{"tag": None, "from": None}], "slots": [None, None], "import_export": 0}
    state.write_text(json.dumps({**doc, "moves": 0}))
    changer = MtxChanger("t", str(state), mtx=mtx_program(tmp_path), timeout=30)
    assert changer.status().drive(0).loaded_from is None
    with pytest.raises(ChangerError, match="No Source for tape in drive 0!"):
        changer.unload(0)
    changer.unload(0, 2)
    assert changer.status().slot(2).full


def test_mtx_missing_program_device_and_timeout(tmp_path: Path) -> None:
    with pytest.raises(ChangerError, match="not found"):
        MtxChanger("t", "/dev/sg9", mtx=str(tmp_path / "nomtx")).status()
    with pytest.raises(ChangerError, match="cannot open SCSI device"):
        MtxChanger("t", str(tmp_path / "gone"), mtx=mtx_program(tmp_path)).status()
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 5\n")
    slow.chmod(0o755)
    with pytest.raises(ChangerError, match=r"no answer within 0\.2 s"):
        MtxChanger("t", "/dev/sg9", mtx=str(slow), timeout=0.2).status()


def test_mtx_garbage_status_is_a_changer_error(tmp_path: Path) -> None:
    liar = tmp_path / "liar"
    liar.write_text("#!/bin/sh\necho 'Hello'\n")
    liar.chmod(0o755)
    with pytest.raises(ChangerError, match="line 1 is not the changer header"):
        MtxChanger("t", "/dev/sg9", mtx=str(liar)).status()


def test_mtx_drive_without_device_configured(tmp_path: Path) -> None:
    with pytest.raises(ChangerError, match="no tape device configured for drive 0"):
        make_mtx(tmp_path).changer.drive(0)


def test_script_other_commands(tmp_path: Path) -> None:
    lib = make_script(tmp_path)
    changer = lib.changer
    assert isinstance(changer, ScriptChanger)
    assert changer.slot_count() == 8
    assert changer.loaded_slot(0) is None
    changer.load(2, 0)
    assert changer.loaded_slot(0) == 2
    with pytest.raises(ChangerError, match="slot 3 is already occupied"):
        changer.transfer(1, 3)
    with pytest.raises(ChangerError, match="drive 5 does not exist"):
        changer.load(1, 5)


def test_script_failure_without_a_message(tmp_path: Path) -> None:
    script = tmp_path / "changer"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(ChangerError, match="listall failed \\(exit status 3\\)"):
        ScriptChanger("t", str(script), "/dev/sg0").status()
    with pytest.raises(ChangerError, match="No such file"):
        ScriptChanger("t", str(tmp_path / "none"), "/dev/sg0").status()


def test_listall_as_bareos_mtx_changer_prints_it() -> None:
    pad = " " * 24
    status = parse_listall(
        f"D:0:F:2:000002L8{pad}\nD:1:E\nS:1:F:000001L8{pad}\nS:2:E\nI:21:F:000021L8{pad}\n"
        "I:22:E\nS:3:F:\nD:2:F:?:\n"
    )
    assert [(d.address, d.full, d.barcode, d.loaded_from) for d in status.drives] == [
        (0, True, "000002L8", 2),
        (1, False, None, None),
        (2, True, None, None),
    ]
    assert [(s.address, s.kind.value, s.full, s.barcode) for s in status.slots] == [
        (1, "slot", True, "000001L8"),
        (2, "slot", False, None),
        (3, "slot", True, None),
        (21, "import/export", True, "000021L8"),
        (22, "import/export", False, None),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "X:1:E",
        "S:1:Q",
        "S:x:E",
        "S:0:E",
        "D:0",
        "S:1:E\nS:1:E",
        "S:99999999:E",
        "S:²:E",
        "S:1:F:" + "A" * 40,
    ],
)
def test_bad_listall_is_a_changer_error(text: str) -> None:
    with pytest.raises(ChangerError, match="listall"):
        parse_listall(text)


def test_the_file_changer_script_is_in_the_interface(tmp_path: Path) -> None:
    """`list` and `listall` agree, as Bareos's own test expects of a script."""
    make_script(tmp_path)
    import subprocess

    out = subprocess.run(
        [str(FILE_CHANGER), str(tmp_path / "changer"), "list", "0", "", "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == [
        "1:A00001L8",
        "2:A00002L8",
        "3:A00003L8",
        "4:A00004L8",
        "5:",
        "7:A00007L8",
    ]


@pytest.mark.skipif(shutil.which("mtx") is None, reason="Debian's mtx is not installed")
def test_real_mtx_on_a_file_that_is_not_a_changer(tmp_path: Path) -> None:
    """The real program's failure is its own one line, not a parse error."""
    plain = tmp_path / "sg0"
    plain.write_bytes(b"")
    with pytest.raises(ChangerError, match="is not an sg device") as caught:
        MtxChanger("t", str(plain), timeout=30).status()
    assert "\n" not in str(caught.value)
    with pytest.raises(ChangerError, match="cannot open SCSI device"):
        MtxChanger("t", str(tmp_path / "missing"), timeout=30).load(1, 0)
