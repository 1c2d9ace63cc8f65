"""A tape drive through the Linux SCSI tape driver (st), on a no-rewind /dev/nst*.

Thin on purpose: no hardware here, so everything that can be checked without
it (the ioctl numbers and the struct layouts of <sys/mtio.h>, the mapping of
errno and status bits to DriveError, EndOfMedium, EndOfData, NoMedium) lives
in small functions the tests call directly, and the class only sequences the
ioctls.

- Fixed-size records: MTSETBLK `record_size` at open; each write_record is
  one write() of exactly that size, each read_record one read().
- File marks: MTWEOF. Rewind: MTREW. End of data: MTEOM.
- Position: MTIOCGET's mt_fileno / mt_blkno (the driver counts both from
  the last rewind); `locate` is rewind + MTFSF + MTFSR, which every drive can do.
- Early warning: st finishes the write that crosses the early-warning mark,
  then fails the next one with ENOSPC and lets one more write through (the
  trailer); after that ENOSPC is final. So the first ENOSPC turns `near_end`
  on and the record is written again; an ENOSPC when already near the end
  raises EndOfMedium (GMT_EOT in the status also turns `near_end` on).
- Reading: a read of 0 bytes is a file mark, unless the status says GMT_EOD
  (blank check), which is EndOfData; EIO with GMT_EOD is EndOfData too.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

from strongroom.errors import DriveError, EndOfData, EndOfMedium, NoMedium
from strongroom.media.drive import DEFAULT_RECORD_SIZE, Position

# <sys/mtio.h>: struct mtop { short mt_op; int mt_count; };
MTOP = struct.Struct("hi")
# struct mtget { long mt_type, mt_resid, mt_dsreg, mt_gstat, mt_erreg;
#                __daddr_t mt_fileno, mt_blkno; }  (__daddr_t is int)
MTGET = struct.Struct("lllllii")
# struct mtpos { long mt_blkno; };
MTPOS = struct.Struct("l")

_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("m") << 8) | number


MTIOCTOP = _ioc(_IOC_WRITE, 1, MTOP.size)
MTIOCGET = _ioc(_IOC_READ, 2, MTGET.size)
MTIOCPOS = _ioc(_IOC_READ, 3, MTPOS.size)

MTFSF, MTBSF, MTFSR, MTBSR, MTWEOF, MTREW, MTOFFL, MTNOP = 1, 2, 3, 4, 5, 6, 7, 8
MTEOM = 12
MTSETBLK = 20

GMT_EOF = 0x80000000
GMT_BOT = 0x40000000
GMT_EOT = 0x20000000
GMT_EOD = 0x08000000
GMT_WR_PROT = 0x04000000
GMT_ONLINE = 0x01000000
GMT_DR_OPEN = 0x00040000


@dataclass(frozen=True)
class TapeStatus:
    """MTIOCGET's answer: the general status bits and the position."""

    gstat: int
    fileno: int
    blkno: int

    @property
    def end_of_data(self) -> bool:
        return bool(self.gstat & GMT_EOD)

    @property
    def early_warning(self) -> bool:
        return bool(self.gstat & GMT_EOT)

    @property
    def online(self) -> bool:
        return bool(self.gstat & GMT_ONLINE) and not self.gstat & GMT_DR_OPEN


def pack_mtop(op: int, count: int) -> bytes:
    return MTOP.pack(op, count)


def unpack_mtget(raw: bytes) -> TapeStatus:
    _type, _resid, _dsreg, gstat, _erreg, fileno, blkno = MTGET.unpack(raw)
    return TapeStatus(gstat=gstat & 0xFFFFFFFF, fileno=fileno, blkno=blkno)


def drive_error(err: OSError, device: str, action: str, status: TapeStatus | None) -> DriveError:
    """The project's error for an errno from the st driver (and the status read after it)."""
    code = err.errno
    if code in (errno.ENOMEDIUM, errno.ENXIO) or (status is not None and not status.online):
        return NoMedium(f"{device}: no cartridge loaded ({action})")
    if code == errno.ENOSPC:
        return EndOfMedium(f"{device}: end of medium ({action})")
    if code == errno.EIO and status is not None and status.end_of_data:
        return EndOfData(f"{device}: end of data ({action})")
    if code == errno.EACCES or (code == errno.EROFS):
        return DriveError(f"{device}: the cartridge is write-protected ({action})")
    if code == errno.EBUSY:
        return DriveError(f"{device}: the drive is in use ({action})")
    return DriveError(f"{device}: {action}: {err.strerror or err}")


class StDrive:
    """The st tape device `device` (use the no-rewind /dev/nstN)."""

    def __init__(self, device: str, *, record_size: int = DEFAULT_RECORD_SIZE) -> None:
        self.device = device
        self.record_size = record_size
        self._near_end = False
        try:
            self._fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise drive_error(err, device, "open", None) from None
        try:
            self._op(MTSETBLK, record_size, "set the record size")
        except DriveError:
            os.close(self._fd)
            raise

    @property
    def near_end(self) -> bool:
        return self._near_end

    def status(self) -> TapeStatus:
        buf = bytearray(MTGET.size)
        try:
            fcntl.ioctl(self._fd, MTIOCGET, buf)
        except OSError as err:
            raise drive_error(err, self.device, "status", None) from None
        return unpack_mtget(bytes(buf))

    def rewind(self) -> None:
        self._op(MTREW, 1, "rewind")
        self._near_end = False

    def position(self) -> Position:
        status = self.status()
        if status.fileno < 0 or status.blkno < 0:
            raise DriveError(f"{self.device}: the driver lost the position (rewind first)")
        return Position(status.fileno, status.blkno)

    def locate(self, position: Position) -> None:
        self.rewind()
        if position.file:
            self._op(MTFSF, position.file, f"space to file {position.file}")
        if position.record:
            self._op(MTFSR, position.record, f"space to record {position.record}")

    def space_to_end_of_data(self) -> None:
        self._op(MTEOM, 1, "space to end of data")

    def write_record(self, data: bytes) -> None:
        if len(data) != self.record_size:
            raise DriveError(
                f"a record is {self.record_size} bytes, not {len(data)} (pad the last one)"
            )
        for _attempt in range(2):
            try:
                written = os.write(self._fd, data)
            except OSError as err:
                if err.errno == errno.ENOSPC and not self._near_end:
                    self._near_end = True  # the early warning: st lets the next write through
                    continue
                raise drive_error(err, self.device, "write", None) from None
            if written != len(data):
                raise EndOfMedium(f"{self.device}: end of medium (short write)")
            if not self._near_end and self._status_quietly_eot():
                self._near_end = True
            return
        raise EndOfMedium(f"{self.device}: end of medium (write)")

    def write_filemark(self, count: int = 1) -> None:
        if count:
            self._op(MTWEOF, count, "write a file mark")

    def read_record(self) -> bytes | None:
        try:
            data = os.read(self._fd, self.record_size)
        except OSError as err:
            status = self._status_or_none()
            raise drive_error(err, self.device, "read", status) from None
        if data:
            return data
        status = self._status_or_none()
        if status is not None and status.end_of_data:
            raise EndOfData(f"{self.device}: end of data")
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _op(self, op: int, count: int, action: str) -> None:
        try:
            fcntl.ioctl(self._fd, MTIOCTOP, pack_mtop(op, count))
        except OSError as err:
            raise drive_error(err, self.device, action, self._status_or_none()) from None

    def _status_or_none(self) -> TapeStatus | None:
        try:
            return self.status()
        except DriveError:
            return None

    def _status_quietly_eot(self) -> bool:
        status = self._status_or_none()
        return status is not None and status.early_warning
