"""The st driver's ioctl numbers, struct layouts and errno mapping (no tape
hardware here: the drive itself runs the contract suite with
$STRONGROOM_TEST_TAPE), and the ioctl sequence on a fake device."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from strongroom.errors import DriveError, EndOfData, EndOfMedium, NoMedium
from strongroom.media import st_drive
from strongroom.media.drive import Position
from strongroom.media.st_drive import (
    GMT_EOD,
    GMT_EOT,
    GMT_ONLINE,
    MTGET,
    MTIOCGET,
    MTIOCPOS,
    MTIOCTOP,
    StDrive,
    TapeStatus,
    drive_error,
    pack_mtop,
    unpack_mtget,
)


@pytest.mark.skipif(struct.calcsize("l") != 8, reason="the numbers below are LP64's")
def test_ioctl_numbers_match_linux_on_lp64() -> None:
    # <sys/mtio.h> on x86_64 / aarch64: _IOW('m', 1, struct mtop) etc.
    assert (MTIOCTOP, MTIOCGET, MTIOCPOS) == (0x40086D01, 0x80306D02, 0x80086D03)
    assert pack_mtop(5, 2) == struct.pack("<hxxi", 5, 2)
    assert MTGET.size == 48


def test_mtget_unpacks_status_and_position() -> None:
    raw = MTGET.pack(0x72, 0, 0, -(2**31) | GMT_ONLINE | GMT_EOD, 0, 3, 17)
    status = unpack_mtget(raw)
    assert (status.fileno, status.blkno) == (3, 17)
    assert status.end_of_data and status.online and not status.early_warning


ONLINE = TapeStatus(GMT_ONLINE, 0, 0)


@pytest.mark.parametrize(
    ("code", "status", "kind", "text"),
    [
        (errno.ENOMEDIUM, None, NoMedium, "no cartridge"),
        (errno.EIO, TapeStatus(0, 0, 0), NoMedium, "no cartridge"),
        (errno.ENOSPC, ONLINE, EndOfMedium, "end of medium"),
        (errno.EIO, TapeStatus(GMT_ONLINE | GMT_EOD, 2, 0), EndOfData, "end of data"),
        (errno.EACCES, ONLINE, DriveError, "write-protected"),
        (errno.EBUSY, ONLINE, DriveError, "in use"),
        (errno.EIO, ONLINE, DriveError, "Input/output error"),
    ],
)
def test_errno_mapping(code: int, status: TapeStatus | None, kind: type, text: str) -> None:
    err = drive_error(OSError(code, os.strerror(code)), "/dev/nst0", "read", status)
    assert type(err) is kind
    assert text.lower() in str(err).lower()
    assert str(err).startswith("/dev/nst0")


class FakeTape:
    """Stands in for fcntl.ioctl and os.read/os.write on one fd."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, int]] = []
        self.gstat = GMT_ONLINE
        self.fileno = self.blkno = 0
        self.writes: list[bytes] = []
        self.enospc = 0
        self.reads: list[bytes] = []

    def ioctl(self, fd: int, request: int, arg: bytes | bytearray) -> None:
        if request == MTIOCTOP:
            op, count = st_drive.MTOP.unpack(bytes(arg))
            self.ops.append((op, count))
        elif request == MTIOCGET:
            arg[:] = MTGET.pack(0, 0, 0, self.gstat, 0, self.fileno, self.blkno)  # type: ignore[index]

    def write(self, fd: int, data: bytes) -> int:
        if self.enospc:
            self.enospc -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.writes.append(data)
        return len(data)

    def read(self, fd: int, size: int) -> bytes:
        return self.reads.pop(0)


@pytest.fixture
def tape(monkeypatch: pytest.MonkeyPatch) -> FakeTape:
    fake = FakeTape()
    monkeypatch.setattr(st_drive.fcntl, "ioctl", fake.ioctl)
    monkeypatch.setattr(st_drive.os, "open", lambda *a, **k: 99)
    monkeypatch.setattr(st_drive.os, "close", lambda fd: None)
    monkeypatch.setattr(st_drive.os, "write", fake.write)
    monkeypatch.setattr(st_drive.os, "read", fake.read)
    return fake


def test_sequence_of_operations(tape: FakeTape) -> None:
    d = StDrive("/dev/nst0", record_size=4096)
    assert tape.ops == [(st_drive.MTSETBLK, 4096)]
    d.locate(Position(2, 5))
    assert tape.ops[1:] == [(st_drive.MTREW, 1), (st_drive.MTFSF, 2), (st_drive.MTFSR, 5)]
    d.space_to_end_of_data()
    d.write_filemark(2)
    assert tape.ops[-2:] == [(st_drive.MTEOM, 1), (st_drive.MTWEOF, 2)]
    tape.fileno, tape.blkno = 4, 9
    assert d.position() == Position(4, 9)
    d.close()


def test_early_warning_then_end_of_medium(tape: FakeTape) -> None:
    d = StDrive("/dev/nst0", record_size=4)
    d.write_record(b"abcd")
    assert not d.near_end
    tape.enospc = 1  # st: the write after the early warning fails once
    d.write_record(b"efgh")
    assert d.near_end and tape.writes == [b"abcd", b"efgh"]
    tape.enospc = 1
    with pytest.raises(EndOfMedium):
        d.write_record(b"ijkl")
    with pytest.raises(DriveError, match="pad"):
        d.write_record(b"x")


def test_eot_status_bit_sets_near_end(tape: FakeTape) -> None:
    d = StDrive("/dev/nst0", record_size=4)
    tape.gstat = GMT_ONLINE | GMT_EOT
    d.write_record(b"abcd")
    assert d.near_end


def test_reading_marks_and_end_of_data(tape: FakeTape) -> None:
    d = StDrive("/dev/nst0", record_size=4)
    tape.reads = [b"abcd", b"", b""]
    assert d.read_record() == b"abcd"
    assert d.read_record() is None
    tape.gstat = GMT_ONLINE | GMT_EOD
    with pytest.raises(EndOfData):
        d.read_record()
