"""The drive contract, against the virtual drive (and a real st drive when
$STRONGROOM_TEST_TAPE names a no-rewind device holding a scratch cartridge:
its data is destroyed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import DriveError, EndOfData, EndOfMedium
from strongroom.media.drive import Drive, Position
from strongroom.media.virtual_drive import MAGIC, VirtualDrive, create_cartridge

RECORD = 4096


def rec(n: int) -> bytes:
    return n.to_bytes(4, "big") * (RECORD // 4)


@pytest.fixture(params=["virtual", "st"])
def drive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Drive]:
    if request.param == "st":
        device = os.environ.get("STRONGROOM_TEST_TAPE")
        if not device:
            pytest.skip("no tape device (set STRONGROOM_TEST_TAPE=/dev/nstN)")
        from strongroom.media.st_drive import StDrive

        d: Drive = StDrive(device, record_size=RECORD)
    else:
        path = tmp_path / "tape"
        create_cartridge(path)
        d = VirtualDrive(path, capacity=64 * (RECORD + 4), record_size=RECORD)
    d.rewind()
    try:
        yield d
    finally:
        d.close()


def write_files(d: Drive, files: list[int]) -> None:
    n = 0
    for count in files:
        for _ in range(count):
            d.write_record(rec(n))
            n += 1
        d.write_filemark()


def test_records_and_file_marks_round_trip(drive: Drive) -> None:
    write_files(drive, [3, 0, 2])
    assert drive.position() == Position(3, 0)
    drive.rewind()
    assert drive.position() == Position(0, 0)
    got = []
    for _ in range(3):
        got.append(drive.read_record())
    assert got == [rec(0), rec(1), rec(2)]
    assert drive.position() == Position(0, 3)
    assert drive.read_record() is None  # the mark, passed
    assert drive.position() == Position(1, 0)
    assert drive.read_record() is None  # the empty file
    assert [drive.read_record(), drive.read_record(), drive.read_record()] == [rec(3), rec(4), None]
    with pytest.raises(EndOfData):
        drive.read_record()


def test_locate_and_space_to_end_of_data(drive: Drive) -> None:
    write_files(drive, [3, 2])
    drive.locate(Position(1, 1))
    assert drive.position() == Position(1, 1)
    assert drive.read_record() == rec(4)
    drive.locate(Position(0, 2))
    assert drive.read_record() == rec(2)
    drive.space_to_end_of_data()
    assert drive.position() == Position(2, 0)
    drive.write_record(rec(9))  # appended after the last mark
    drive.write_filemark()
    drive.locate(Position(2, 0))
    assert drive.read_record() == rec(9)


def test_locate_past_the_data_is_end_of_data(drive: Drive) -> None:
    write_files(drive, [2])
    with pytest.raises(EndOfData):
        drive.locate(Position(5, 0))
    with pytest.raises(EndOfData):
        drive.locate(Position(0, 7))


def test_writing_in_the_middle_cuts_what_follows(drive: Drive) -> None:
    write_files(drive, [3, 3])
    drive.locate(Position(0, 1))
    drive.write_record(rec(42))
    drive.write_filemark()
    drive.rewind()
    assert [drive.read_record(), drive.read_record(), drive.read_record()] == [
        rec(0),
        rec(42),
        None,
    ]
    with pytest.raises(EndOfData):
        drive.read_record()


def test_a_record_is_exactly_record_size(drive: Drive) -> None:
    with pytest.raises(DriveError, match="pad"):
        drive.write_record(b"short")


def test_blank_cartridge_is_end_of_data(drive: Drive) -> None:
    with pytest.raises(EndOfData):
        drive.read_record()
    drive.space_to_end_of_data()
    assert drive.position() == Position(0, 0)


def test_early_warning_then_end_of_medium(tmp_path: Path) -> None:
    path = tmp_path / "tape"
    create_cartridge(path)
    capacity = len(MAGIC) + 10 * (RECORD + 4)
    with VirtualDrive(
        path, capacity=capacity, record_size=RECORD, early_warning=3 * (RECORD + 4)
    ) as d:
        written = 0
        warned_at = None
        with pytest.raises(EndOfMedium):
            while True:
                d.write_record(rec(written))
                written += 1
                if d.near_end and warned_at is None:
                    warned_at = written
        assert written == 10 and warned_at == 8
        size = path.stat().st_size
        assert size == capacity  # nothing of the refused record is on the cartridge
        d.rewind()
        assert not d.near_end
        assert [d.read_record() for _ in range(10)] == [rec(i) for i in range(10)]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"NOTATAPE" + b[8:], "not a virtual tape"),
        (lambda b: b[:-100], "cut short|does not fit"),
        (lambda b: b[:8] + (0xFFFFFFF0).to_bytes(4, "little") + b[12:], "does not fit"),
        (lambda b: b[:10], "cut short"),
    ],
)
def test_a_damaged_cartridge_is_a_clear_drive_error(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tape"
    create_cartridge(path)
    with VirtualDrive(path, capacity=1 << 20, record_size=RECORD) as d:
        write_files(d, [2])
    path.write_bytes(damage(path.read_bytes()))
    with (
        pytest.raises(DriveError, match=message) as caught,
        VirtualDrive(path, capacity=1 << 20, record_size=RECORD) as d,
    ):
        d.space_to_end_of_data()
        d.rewind()
        while True:
            d.read_record()
    assert not isinstance(caught.value, EndOfData)
    assert "\n" not in str(caught.value)
