"""The `mtx status` parser on real outputs (Bareos's mtx-changer fixtures,
byte for byte) and on hostile text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import ChangerError
from strongroom.media.changer import ElementKind
from strongroom.media.mtx_status import MAX_LINE, MAX_LINES, parse_status
from tests.media.conftest import FIXTURES


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_empty_library() -> None:
    header, status = parse_status(fixture("empty.txt"))
    assert (header.device, header.drives, header.slots, header.import_export) == (
        "/dev/sg0",
        2,
        24,
        4,
    )
    assert not any(e.full for e in status.elements())
    assert [e.address for e in status.slots] == list(range(1, 25))
    assert status.free_slots(ElementKind.IMPORT_EXPORT) == [21, 22, 23, 24]
    assert len(status.free_slots()) == 20


def test_loaded_library_strips_the_tag_padding() -> None:
    _, status = parse_status(fixture("loaded1.txt"))
    drive = status.drive(0)
    assert (drive.full, drive.barcode, drive.loaded_from) == (True, "000002L8", 2)
    assert not status.drive(1).full
    assert status.slot(1).barcode == "000001L8"
    assert not status.slot(2).full
    assert [e.address for e in status.slots if e.full] == [1, 3, 4, 5, 6, 7, 8]
    assert status.where("000002L8") == drive


def test_two_drives_loaded() -> None:
    _, status = parse_status(fixture("loadedboth.txt"))
    assert [(d.barcode, d.loaded_from) for d in status.drives] == [
        ("000003L8", 3),
        ("000004L8", 4),
    ]


def test_import_export_slots_are_counted_among_slots() -> None:
    header, status = parse_status(fixture("impexp.txt"))
    ie = [e for e in status.slots if e.kind is ElementKind.IMPORT_EXPORT]
    assert [(e.address, e.barcode) for e in ie] == [
        (21, "000021L8"),
        (22, "000022L8"),
        (23, "000023L8"),
        (24, "000024L8"),
    ]
    assert header.slots == len(status.slots) == 24


def test_no_barcode_reader_and_unknown_origin() -> None:
    header, status = parse_status(fixture("nobarcode.txt"))
    assert header.device == "/dev/sg3"
    drive = status.drive(0)
    assert (drive.full, drive.barcode, drive.loaded_from) == (True, None, None)
    assert [(e.address, e.full, e.barcode) for e in status.slots] == [
        (1, True, None),
        (2, False, None),
        (3, True, None),
        (4, False, None),
        (5, False, None),
        (6, True, None),
    ]
    assert status.slot(6).kind is ElementKind.IMPORT_EXPORT


def test_alternate_volume_tags() -> None:
    _, status = parse_status(fixture("alternate.txt"))
    drive = status.drive(0)
    assert (drive.barcode, drive.alternate_barcode, drive.loaded_from) == ("A00005L8", "B00005", 5)
    assert (status.slot(1).barcode, status.slot(1).alternate_barcode) == ("A00001L8", "B00001")
    assert status.slot(2).full and status.slot(2).barcode is None
    assert status.slot(8).barcode == "CLN001L1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'Storage Changer' header"),
        ("mtx: cannot open SCSI device\n", "line 1 is not the changer header"),
        (
            "  Storage Changer /dev/sg0:1 Drives, 1 Slots ( 0 Import/Export )\n"
            "Data Transfer Element 0:Empty\n      Storage Element 1:Maybe\n",
            "line 3 is not mtx's",
        ),
        (
            "  Storage Changer /dev/sg0:2 Drives, 1 Slots ( 0 Import/Export )\n"
            "Data Transfer Element 0:Empty\n      Storage Element 1:Empty\n",
            "says 2 drives, 1 are listed",
        ),
        (
            "  Storage Changer /dev/sg0:1 Drives, 2 Slots ( 0 Import/Export )\n"
            "Data Transfer Element 0:Empty\n      Storage Element 1:Empty\n"
            "      Storage Element 1:Empty\n",
            "element 1 twice",
        ),
        (
            "  Storage Changer /dev/sg0:1 Drives, 1 Slots ( 0 Import/Export )\n"
            "Data Transfer Element 0:Empty\n      Storage Element 99999999:Empty\n",
            "line 3",
        ),
        (
            "  Storage Changer /dev/sg0:1 Drives, 1 Slots ( 0 Import/Export )\n"
            "Data Transfer Element 0:Empty\n      Storage Element 70000:Empty\n",
            "out of range",
        ),
        (
            "  Storage Changer /dev/sg0:1 Drives, 1 Slots ( 0 Import/Export )\n"
            "Data Transfer Element 0:Empty\n      Storage Element 1:Full :VolumeTag=A\x01\n",
            "not a barcode",
        ),
        ("x" * (MAX_LINE + 1), f"longer than {MAX_LINE}"),
        ("\n" * (MAX_LINES + 2), f"more than {MAX_LINES} lines"),
    ],
)
def test_malformed_output_is_a_changer_error_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ChangerError, match=message) as caught:
        parse_status(text)
    assert "\n" not in str(caught.value)


_LINES = [
    line + "\n"
    for f in ("loaded1.txt", "nobarcode.txt", "alternate.txt")
    for line in fixture(f).splitlines()
]


@given(st.lists(st.sampled_from(_LINES) | st.text(max_size=120), max_size=40))
def test_any_text_parses_or_is_a_changer_error(lines: list[str]) -> None:
    try:
        _, status = parse_status("".join(lines))
    except ChangerError as err:
        assert "\n" not in str(err)
    else:
        assert all(e.barcode is None or e.barcode.strip() == e.barcode for e in status.elements())


@given(st.binary(max_size=300), st.integers(0, 1300))
def test_a_damaged_real_output_never_crashes(noise: bytes, at: int) -> None:
    text = fixture("loaded1.txt")
    damaged = text[:at] + noise.decode("latin-1") + text[at:]
    try:
        parse_status(damaged)
    except ChangerError:
        pass
