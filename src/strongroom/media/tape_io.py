"""Byte streams over fixed-size records: what the media format writes and reads.

A unit (a pack with its frame, a session catalog) starts at a record
boundary and its last record is padded with zeros, so every unit has a
(file, first record) position a reader can locate directly. Readers know
their lengths from the format, never from the padding.
"""

from __future__ import annotations

from collections.abc import Callable

from strongroom.errors import DriveError, EndOfData, IntegrityError
from strongroom.media.drive import Drive, Position


class RecordWriter:
    """Buffers bytes and writes whole records; `pad` ends a unit.

    EndOfMedium from the drive propagates: the record that failed is not on
    the tape, and neither is anything still buffered."""

    def __init__(self, drive: Drive) -> None:
        self.drive = drive
        self.size = drive.record_size
        self._buf = bytearray()
        self.records = 0  # written by this writer
        self.accepted = 0  # bytes handed to `write` (units start at record boundaries)
        # Called after each record reaches the tape: a writer watching the
        # early warning raises from here, before the next record is written.
        self.after_record: Callable[[], None] | None = None

    @property
    def flushed(self) -> int:
        """Bytes of the stream (padding included) that are on the tape."""
        return self.records * self.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`; every record it completes goes to the drive now.

        Each byte is copied once into the record that carries it (a slice of
        `data`, or the partial record buffered from the last call): no
        buffer grows with `data` and none is shifted, so the cost per byte
        does not depend on how large the pieces handed in are."""
        view = memoryview(data).cast("B")
        self.accepted += len(view)
        size, pos = self.size, 0
        if self._buf:
            pos = min(size - len(self._buf), len(view))
            self._buf += view[:pos]
            if len(self._buf) < size:
                return
            record = bytes(self._buf)
            self._buf.clear()
            self._emit(record)
        while len(view) - pos >= size:
            self._emit(bytes(view[pos : pos + size]))
            pos += size
        self._buf += view[pos:]

    def _emit(self, record: bytes) -> None:
        self.drive.write_record(record)
        self.records += 1
        if self.after_record is not None:
            self.after_record()

    def pad(self) -> None:
        if self._buf:
            self._buf += bytes(self.size - len(self._buf))
            self.drive.write_record(bytes(self._buf))
            self._buf.clear()
            self.accepted = self.records * self.size + self.size
            self.records += 1


def records_for(length: int, record_size: int) -> int:
    return -(-length // record_size)


class RecordReader:
    """Reads exact byte counts from consecutive records of one file.

    Every failure names the file and record it happened at: a file mark or
    the end of data inside a unit is an IntegrityError (the unit is cut
    short), a record of the wrong size a DriveError."""

    def __init__(self, drive: Drive, start: Position, what: str) -> None:
        self.drive = drive
        self.what = what
        self.file = start.file
        self.next_record = start.record  # the record the next read returns
        self._buf = bytearray()

    def where(self) -> str:
        return f"file {self.file}, record {self.next_record}"

    def _fill(self) -> None:
        try:
            record = self.drive.read_record()
        except EndOfData:
            raise IntegrityError(
                f"{self.what} is cut short: the data ends at {self.where()}"
            ) from None
        if record is None:
            raise IntegrityError(f"{self.what} is cut short: a file mark at {self.where()}")
        if len(record) != self.drive.record_size:
            raise DriveError(
                f"{self.what}: {self.where()} is {len(record)} bytes, "
                f"not a record of {self.drive.record_size}"
            )
        self._buf += record
        self.next_record += 1

    def read(self, length: int) -> bytes:
        """Exactly `length` bytes (callers bound `length` before asking)."""
        while len(self._buf) < length:
            self._fill()
        out = bytes(self._buf[:length])
        del self._buf[:length]
        return out

    def end_unit(self) -> None:
        """Drop the padding of the current record: the next unit starts at a
        record boundary."""
        self._buf.clear()
