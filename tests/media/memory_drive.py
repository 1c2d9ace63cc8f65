"""A tape drive in memory that keeps the Drive protocol (media/drive.py) to the
letter, so the media format is tested without the virtual library.

The tape is a list of items, each a record (bytes) or a file mark. Reading
past the last item raises EndOfData; writing at any position first cuts the
tape there (tape semantics). Records cost `record_size` bytes of `capacity`,
file marks nothing; `near_end` is true once less than `early_warning` bytes
remain, and a record that does not fit raises EndOfMedium with nothing
written.
"""

from __future__ import annotations

from strongroom.errors import DriveError, EndOfData, EndOfMedium, NoMedium
from strongroom.media.drive import DEFAULT_RECORD_SIZE, Position

FILEMARK = None


class MemoryTape:
    """A cartridge: what survives unloading it from one drive into another."""

    def __init__(self, capacity: int = 1 << 40, early_warning: int = 0) -> None:
        self.items: list[bytes | None] = []
        self.capacity = capacity
        self.early_warning = early_warning

    @property
    def used(self) -> int:
        return sum(len(item) for item in self.items if item is not None)


class MemoryDrive:
    """The Drive protocol over a MemoryTape (or none: NoMedium)."""

    def __init__(
        self, tape: MemoryTape | None = None, record_size: int = DEFAULT_RECORD_SIZE
    ) -> None:
        self.tape = tape
        self.record_size = record_size
        self._index = 0
        self.records_read = 0

    def _loaded(self) -> MemoryTape:
        if self.tape is None:
            raise NoMedium("no cartridge in the memory drive")
        return self.tape

    def load(self, tape: MemoryTape) -> None:
        self.tape = tape
        self._index = 0

    @property
    def near_end(self) -> bool:
        tape = self._loaded()
        return tape.used >= tape.capacity - tape.early_warning

    def rewind(self) -> None:
        self._loaded()
        self._index = 0

    def position(self) -> Position:
        items = self._loaded().items[: self._index]
        file = sum(1 for item in items if item is FILEMARK)
        last_mark = max((i for i, item in enumerate(items) if item is FILEMARK), default=-1)
        return Position(file, self._index - last_mark - 1)

    def locate(self, position: Position) -> None:
        items = self._loaded().items
        index = 0
        for _ in range(position.file):
            while index < len(items) and items[index] is not FILEMARK:
                index += 1
            if index >= len(items):
                raise EndOfData(f"file {position.file} is beyond the end of data")
            index += 1
        for _ in range(position.record):
            if index >= len(items) or items[index] is FILEMARK:
                raise EndOfData(f"record {position.record} of file {position.file} is not there")
            index += 1
        self._index = index

    def space_to_end_of_data(self) -> None:
        self._index = len(self._loaded().items)

    def write_record(self, data: bytes) -> None:
        tape = self._loaded()
        if len(data) != self.record_size:
            raise DriveError(f"a record is {self.record_size} bytes, not {len(data)}")
        del tape.items[self._index :]
        if tape.used + len(data) > tape.capacity:
            raise EndOfMedium("the cartridge is full")
        tape.items.append(bytes(data))
        self._index += 1

    def write_filemark(self, count: int = 1) -> None:
        tape = self._loaded()
        del tape.items[self._index :]
        tape.items.extend([FILEMARK] * count)
        self._index += count

    def read_record(self) -> bytes | None:
        items = self._loaded().items
        if self._index >= len(items):
            raise EndOfData("end of data")
        item = items[self._index]
        self._index += 1
        if item is not None:
            self.records_read += 1
        return item

    def close(self) -> None:
        pass

    # --- for tests ------------------------------------------------------------

    def item_index(self, position: Position) -> int:
        """Where a (file, record) lies in the tape's item list."""
        self.locate(position)
        return self._index
