"""The copy's fast paths keep the on-tape bytes: RecordWriter's one-copy
record slicing (any split of the stream gives the same records) and the
virtual drive's early writeback (records read back equal, across cuts)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.media import virtual_drive
from strongroom.media.drive import Position
from strongroom.media.tape_io import RecordWriter
from strongroom.media.virtual_drive import VirtualDrive, create_cartridge

SIZE = 64


class _Records:
    record_size = SIZE

    def __init__(self) -> None:
        self.records: list[bytes] = []

    def write_record(self, data: bytes) -> None:
        assert type(data) is bytes and len(data) == SIZE
        self.records.append(data)


@settings(max_examples=150, deadline=None)
@given(
    units=st.lists(
        st.lists(st.binary(min_size=0, max_size=300), max_size=6), min_size=1, max_size=4
    )
)
def test_any_split_of_the_stream_gives_the_same_records(units: list[list[bytes]]) -> None:
    drive = _Records()
    out = RecordWriter(drive)  # type: ignore[arg-type]  # only what RecordWriter uses
    expected: list[bytes] = []
    for pieces in units:
        whole = b"".join(pieces)
        assert out.accepted == out.records * SIZE  # a unit starts at a record boundary
        for piece in pieces:
            out.write(memoryview(piece) if len(piece) % 2 else piece)
        out.pad()
        padded = whole + bytes(-len(whole) % SIZE)
        expected += [padded[i : i + SIZE] for i in range(0, len(padded), SIZE)]
        assert out.records == len(expected) and out.flushed == out.records * SIZE
    assert drive.records == expected


def test_early_writeback_keeps_every_record_across_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(virtual_drive, "WRITEBACK", 3 * 1024)  # a window every few records
    tape = tmp_path / "c.tape"
    create_cartridge(tape)
    rng = random.Random(5)
    records = [rng.randbytes(1024) for _ in range(40)]
    with VirtualDrive(tape, capacity=1 << 20, record_size=1024) as drive:
        for r in records[:30]:
            drive.write_record(r)
        drive.write_filemark()
        drive.locate(Position(0, 12))  # cut inside the file and write on from there
        for r in records[30:]:
            drive.write_record(r)
        drive.write_filemark()
    with VirtualDrive(tape, capacity=1 << 20, record_size=1024) as drive:
        back = []
        while (record := drive.read_record()) is not None:
            back.append(record)
    assert back == records[:12] + records[30:]
