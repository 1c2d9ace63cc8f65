"""Hostile bytes at every parser of the media layer (the review of issue
#14): hypothesis over `listall` output, over a cartridge file read by the
virtual drive and walked by `format.scan`, and the cases found by hand
(digits that are not ASCII in `mtx status`, a session time past year 9999,
a session header claiming the last session number)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.errors import ChangerError, DriveError, IntegrityError, MediaError
from strongroom.media.changer import MAX_BARCODE
from strongroom.media.format import scan
from strongroom.media.label import MAX_TIME, Label
from strongroom.media.mtx_status import parse_status
from strongroom.media.script_changer import MAX_ADDRESS, parse_listall
from strongroom.media.session import SessionCatalog
from strongroom.media.virtual_drive import MAGIC, VirtualDrive
from strongroom.repository.keys import MasterKey

RECORD = 512
_LABEL = Label(bytes(16), "0" * 32, "A00001L8", "p", 1, 0).encode(MasterKey(bytes(64)))

_LISTALL_LINES = [
    "D:0:F:2:000002L8",
    "D:1:E",
    "S:1:F:000001L8                        ",
    "S:2:E",
    "I:21:F:000021L8",
    "I:22:E",
    "D:0:F::",
    "S:65535:F:A/../B",
    "S:-1:E",
    "S:1:F:\x1b[31mRED",
    "D:3:F:99999999999999999999:X",
]


@given(st.lists(st.sampled_from(_LISTALL_LINES) | st.text(max_size=80), max_size=30))
def test_fuzz_listall_parses_or_is_one_changer_error(lines: list[str]) -> None:
    try:
        status = parse_listall("\n".join(lines))
    except ChangerError as err:
        assert "\n" not in str(err)
        return
    addresses = [e.address for e in status.slots]
    assert len(addresses) == len(set(addresses))
    assert len({d.address for d in status.drives}) == len(status.drives)
    for element in status.elements():
        assert 0 <= element.address <= MAX_ADDRESS
        if element.barcode is not None:
            assert 0 < len(element.barcode) <= MAX_BARCODE
            assert element.barcode.isprintable() and element.barcode.isascii()
        if element.loaded_from is not None:
            assert 1 <= element.loaded_from <= MAX_ADDRESS


def test_mtx_status_numbers_are_ascii_digits() -> None:
    """`\\d` in a str pattern matches any Unicode digit ("٣" is 3): mtx
    prints ASCII, anything else is not mtx's output."""
    header = "  Storage Changer /dev/sg3:1 Drives, 1 Slots ( 0 Import/Export )\n"
    drive = "Data Transfer Element 0:Empty\n"
    assert parse_status(header + drive + "      Storage Element 1:Empty\n")[1].slots
    with pytest.raises(ChangerError, match="line 3"):
        parse_status(header + drive + "      Storage Element \u0661:Empty\n")
    with pytest.raises(ChangerError, match="line 1"):
        parse_status(header.replace("1 Drives", "\u0661 Drives") + drive)


def test_a_session_time_past_year_9999_is_malformed() -> None:
    catalog = SessionCatalog(
        repository_id="0" * 32,
        media_id=bytes(16),
        session=1,
        sequence=1,
        job=bytes(16),
        time=MAX_TIME,
        record_size=RECORD,
        data_file=1,
        config=b"c",
        key_hashes=[],
    )
    assert SessionCatalog.decode(catalog.plaintext()).time == MAX_TIME
    catalog.time = MAX_TIME + 1
    with pytest.raises(IntegrityError, match="year 9999"):
        SessionCatalog.decode(catalog.plaintext())


def _entries(items: list[bytes | None]) -> bytes:
    out = b""
    for item in items:
        out += struct.pack("<I", 0) if item is None else struct.pack("<I", len(item)) + item
    return out


_RECORDS = st.one_of(
    st.none(),
    st.binary(min_size=1, max_size=40),
    st.sampled_from([b"SRMLABEL", b"SRMSESS1", b"SRMCAT01", b"SRMPACK1"]).flatmap(
        lambda magic: st.binary(max_size=RECORD).map(lambda tail: (magic + tail)[:RECORD])
    ),
    st.binary(min_size=RECORD, max_size=RECORD),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.booleans(), st.lists(_RECORDS, max_size=12), st.binary(max_size=12))
def test_fuzz_a_cartridge_file_is_scanned_or_refused_in_one_line(
    tmp_path: Path, labelled: bool, items: list[bytes | None], tail: bytes
) -> None:
    """Any cartridge file (records of any size, magics at the start of
    records, a torn last entry): the scan that every inventory and copy
    runs first gives a result or a DriveError/IntegrityError/MediaError."""
    path = tmp_path / "fuzz.tape"
    if labelled:  # a well-formed label (not verified: scan needs no key), then a mark
        items = [_LABEL + bytes(RECORD - len(_LABEL)), None, *items]
    path.write_bytes(MAGIC + _entries(items) + tail)
    with VirtualDrive(path, capacity=1 << 30, record_size=RECORD) as drive:
        try:
            found = scan(drive)
        except (DriveError, IntegrityError, MediaError) as err:
            assert "\n" not in str(err)
            return
    for session in found.sessions:
        assert len(session.key_files) <= 16
        assert session.data_file >= 1
