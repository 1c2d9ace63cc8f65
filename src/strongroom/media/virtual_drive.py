"""A cartridge as a file with tape semantics, and the drive that reads and writes it.

Cartridge file (like Bacula's vtape): an 8-byte magic `SRVTAPE1`, then
entries, each a 4-byte little-endian length followed by that many bytes: a
length of 0 is a file mark, anything else one record. The end of the file is
the end of data, so a blank cartridge is the magic alone.

Tape semantics, as drive.py states them: writing (a record or a file mark)
at any position first cuts the cartridge there, so everything after it is
gone; records are fsynced at each file mark (and at close), which is where a
writer expects its data to be durable, as on a real drive that flushes its
buffer at a mark. The capacity counts the whole file; past
`capacity - early_warning` a write still succeeds and `near_end` turns on,
and a record that no longer fits raises EndOfMedium with nothing written.

A cartridge file is hostile input (a copy from elsewhere, a half-written
disk): a bad magic, a length beyond MAX_RECORD or an entry cut short is a
DriveError naming the file and the byte offset, never a crash or a silent
end of data.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct

from strongroom.errors import DriveError, EndOfData, EndOfMedium, NoMedium
from strongroom.media.drive import DEFAULT_RECORD_SIZE, Position

MAGIC = b"SRVTAPE1"
MAX_RECORD = 16 << 20
# Written bytes handed to the kernel's writeback at a time (see _write).
WRITEBACK = 16 << 20
_LENGTH = struct.Struct("<I")


def create_cartridge(path: str | os.PathLike[str]) -> None:
    """A blank cartridge (exclusive: an existing file is never overwritten)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, MAGIC)
        os.fsync(fd)
    finally:
        os.close(fd)


def default_early_warning(capacity: int, record_size: int) -> int:
    """The early-warning zone: 1/64 of the cartridge, at least two records."""
    return max(capacity // 64, 2 * (record_size + _LENGTH.size))


class VirtualDrive:
    """A drive with the cartridge file `path` loaded."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        capacity: int,
        record_size: int = DEFAULT_RECORD_SIZE,
        early_warning: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.record_size = record_size
        self.capacity = capacity
        self.early_warning = (
            default_early_warning(capacity, record_size) if early_warning is None else early_warning
        )
        try:
            self._file = open(self.path, "r+b", buffering=0)  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise NoMedium(f"cartridge file {self.path} is missing") from None
        except OSError as err:
            raise DriveError(f"cartridge file {self.path}: {err.strerror}") from None
        if self._file.read(len(MAGIC)) != MAGIC:
            self._file.close()
            raise DriveError(f"cartridge file {self.path} is damaged: not a virtual tape")
        self._offset = len(MAGIC)
        self._file_number = 0
        self._record = 0
        self._dirty = False
        self._run_start = self._run_end = 0  # contiguous writes not yet sent to writeback

    @property
    def near_end(self) -> bool:
        return self._offset > self.capacity - self.early_warning

    def rewind(self) -> None:
        self._flush()
        self._offset, self._file_number, self._record = len(MAGIC), 0, 0

    def position(self) -> Position:
        return Position(self._file_number, self._record)

    def locate(self, position: Position) -> None:
        """Rewind, then space forward `file` marks and `record` records;
        EndOfData when the cartridge ends first (the position is then there)."""
        if position.file < 0 or position.record < 0:
            raise DriveError(f"no position {position.file}/{position.record} on a tape")
        self.rewind()
        while self._file_number < position.file:
            if self._skip_entry() is None:
                raise EndOfData(f"{self.path}: the data ends before file {position.file}")
        while self._record < position.record:
            kind = self._skip_entry()
            if kind is None or kind == "mark":
                raise EndOfData(
                    f"{self.path}: file {position.file} ends before record {position.record}"
                )

    def space_to_end_of_data(self) -> None:
        while self._skip_entry() is not None:
            pass

    def write_record(self, data: bytes) -> None:
        if len(data) != self.record_size:
            raise DriveError(
                f"a record is {self.record_size} bytes, not {len(data)} (pad the last one)"
            )
        if self._offset + _LENGTH.size + len(data) > self.capacity:
            raise EndOfMedium(f"{self.path}: the cartridge is full")
        self._write(_LENGTH.pack(len(data)), data)  # one pwritev: the record is not copied
        self._record += 1

    def write_filemark(self, count: int = 1) -> None:
        if count < 0:
            raise DriveError("a negative number of file marks")
        if count and self._offset + _LENGTH.size * count > self.capacity:
            raise EndOfMedium(f"{self.path}: the cartridge is full")
        if count:
            self._write(_LENGTH.pack(0) * count)
            self._file_number += count
            self._record = 0
        self._flush()

    def read_record(self) -> bytes | None:
        length = self._read_length()
        if length is None:
            raise EndOfData(f"{self.path}: end of data at file {self._file_number}")
        if length == 0:
            self._offset += _LENGTH.size
            self._file_number += 1
            self._record = 0
            return None
        data = self._pread(length, self._offset + _LENGTH.size)
        self._offset += _LENGTH.size + length
        self._record += 1
        return data

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._flush()
            finally:
                self._file.close()

    def __enter__(self) -> VirtualDrive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the file underneath ------------------------------------------------

    def _size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def _write(self, *parts: bytes) -> None:
        """Write `parts` at the position (cutting the cartridge there first).

        Every WRITEBACK bytes of a contiguous run, the run is handed to the
        kernel's writeback (POSIX_FADV_DONTNEED starts writing dirty pages
        back without waiting, and drops the clean ones): the disk writes
        while the writer goes on, the fsync at the next file mark finds
        little left to do, and a copy of terabytes does not fill the page
        cache. Durability is unchanged: only the fsync promises anything."""
        length = sum(len(p) for p in parts)
        if self._offset != self._run_end:
            self._run_start = self._offset
        try:
            if self._size() > self._offset:
                self._file.truncate(self._offset)  # tape semantics: cut here
            fd = self._file.fileno()
            done = os.pwritev(fd, parts, self._offset)
            if done != length:  # a short write: the next one says why (EFBIG, ENOSPC)
                rest = b"".join(parts)
                while done < length:
                    done += os.pwrite(fd, rest[done:], self._offset + done)
        except OSError as err:
            # As a drive: nothing of a failed write is on the tape (a record cut
            # short would make the cartridge unreadable past it).
            with contextlib.suppress(OSError):
                self._file.truncate(self._offset)
            if err.errno == errno.ENOSPC:
                raise EndOfMedium(f"{self.path}: the disk under the cartridge is full") from None
            raise DriveError(f"cartridge file {self.path}: {err.strerror}") from None
        self._offset += length
        self._dirty = True
        self._run_end = self._offset
        if self._run_end - self._run_start >= WRITEBACK:
            with contextlib.suppress(OSError):  # advice: a file system may not take it
                os.posix_fadvise(
                    self._file.fileno(),
                    self._run_start,
                    self._run_end - self._run_start,
                    os.POSIX_FADV_DONTNEED,
                )
            self._run_start = self._run_end

    def _flush(self) -> None:
        if self._dirty:
            try:
                os.fsync(self._file.fileno())
            except OSError as err:
                raise DriveError(f"cartridge file {self.path}: {err.strerror}") from None
            self._dirty = False

    def _pread(self, length: int, offset: int) -> bytes:
        try:
            data = os.pread(self._file.fileno(), length, offset)
        except OSError as err:
            raise DriveError(f"cartridge file {self.path}: {err.strerror}") from None
        if len(data) != length:
            raise DriveError(
                f"cartridge file {self.path} is damaged: an entry at byte {offset} is cut short"
            )
        return data

    def _read_length(self) -> int | None:
        """The length of the entry here, None at the end of data."""
        size = self._size()
        if self._offset >= size:
            return None
        (length,) = _LENGTH.unpack(self._pread(_LENGTH.size, self._offset))
        if length > MAX_RECORD or self._offset + _LENGTH.size + length > size:
            raise DriveError(
                f"cartridge file {self.path} is damaged at byte {self._offset}: "
                f"an entry of {length} bytes does not fit"
            )
        return int(length)

    def _skip_entry(self) -> str | None:
        length = self._read_length()
        if length is None:
            return None
        self._offset += _LENGTH.size + length
        if length == 0:
            self._file_number += 1
            self._record = 0
            return "mark"
        self._record += 1
        return "record"
