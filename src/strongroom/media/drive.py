"""What every tape drive is to the media format: fixed-size records, file marks,
end of data, a position, and the end-of-medium warning.

Semantics (the Linux st driver's, which the virtual drive copies so that code
tested on it behaves the same on a real /dev/nst*):

- `write_record` writes exactly one record of `record_size` bytes (a short
  last record is padded by the caller, the format knows its lengths). Past the
  early warning near the end of the tape it still writes but `near_end`
  becomes true: the writer closes what it is writing and moves to the next
  medium. When nothing more fits it raises EndOfMedium and nothing of that
  record is on the tape.
- `read_record` returns the next record, or None at a file mark (the mark is
  then passed); at the end of the recorded data it raises EndOfData (the st
  driver's blank check).
- A position is (file number, record number within the file), both from 0 at
  the beginning of the tape; `locate` goes there (rewind + space on drives
  that cannot seek).
- Writing at a position truncates everything after it (tape semantics: there
  is no overwrite in the middle), so writers append only after
  `space_to_end_of_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DEFAULT_RECORD_SIZE = 256 * 1024  # LTO drives stream well at 256 KiB records


@dataclass(frozen=True, order=True)
class Position:
    file: int
    record: int


class Drive(Protocol):
    """A tape drive with a cartridge loaded (DriveError, EndOfMedium, EndOfData,
    NoMedium in errors.py)."""

    record_size: int

    @property
    def near_end(self) -> bool:
        """Past the early warning: finish what is being written, then change media."""
        ...

    def rewind(self) -> None: ...

    def position(self) -> Position: ...

    def locate(self, position: Position) -> None: ...

    def space_to_end_of_data(self) -> None: ...

    def write_record(self, data: bytes) -> None: ...

    def write_filemark(self, count: int = 1) -> None: ...

    def read_record(self) -> bytes | None: ...

    def close(self) -> None:
        """Release the device (the cartridge stays loaded)."""
        ...
