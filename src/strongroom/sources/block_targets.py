"""Where a block image is restored: a file, a block device, an NBD export, a qcow2.

A target says whether unwritten ranges already read as zeros (`zeroed`: a new
or truncated file, a new qcow2), so that holes cost nothing, and whether
`write` may be called from several threads (`parallel`: pwrite on a file
descriptor is; an NBD connection is not).
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import subprocess
from collections.abc import Iterable
from typing import Protocol

from strongroom.config import child_environment
from strongroom.errors import SourceError, UsageError
from strongroom.nbd.client import NbdClient, NbdError
from strongroom.sources.block import BLKGETSIZE64, Data
from strongroom.sources.qemu_img import QEMU_IMG, need_tool
from strongroom.sources.qemu_nbd import QemuNbdChild
from strongroom.sparse import ZEROS, nonzero_runs

BLKZEROOUT = 0x127F


class BlockTarget(Protocol):
    description: str
    size: int
    zeroed: bool
    parallel: bool

    def write(self, offset: int, data: Data) -> None: ...

    def write_many(self, writes: Iterable[tuple[int, Data]]) -> None: ...

    def write_zeroes(self, offset: int, length: int) -> None: ...

    def close(self) -> None:
        """Make everything durable (fsync / NBD flush) and release the target."""
        ...


def pwrite_all(fd: int, data: Data, offset: int) -> None:
    """pwrite until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class FileTarget:
    """A regular file (created or truncated: unwritten ranges stay sparse) or a device."""

    def __init__(self, path: str, size: int) -> None:
        self.description = path
        self.size = size
        self.parallel = True
        try:
            st = os.stat(path)
            is_device = stat.S_ISBLK(st.st_mode)
        except FileNotFoundError:
            is_device = False
        flags = os.O_WRONLY | os.O_CLOEXEC | (0 if is_device else os.O_CREAT | os.O_TRUNC)
        try:
            self._fd = os.open(path, flags, 0o600)
        except OSError as err:
            raise SourceError(f"{path}: cannot open for writing: {err.strerror}") from None
        self.is_device = is_device
        if is_device:
            raw = fcntl.ioctl(self._fd, BLKGETSIZE64, b"\0" * 8)
            device_size = int(struct.unpack("Q", raw)[0])
            if device_size < size:
                os.close(self._fd)
                raise UsageError(f"{path} holds {device_size} bytes; the image needs {size}")
            self.zeroed = False
        else:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                os.close(self._fd)
                raise SourceError(f"{path}: cannot size to {size} bytes: {err.strerror}") from None
            self.zeroed = True

    def write(self, offset: int, data: Data) -> None:
        """Write `data`; on a zeroed file, all-zero 64 KiB pieces stay holes."""
        try:
            if not self.zeroed:
                pwrite_all(self._fd, data, offset)
                return
            view = memoryview(data)
            for start, end in nonzero_runs(data):
                pwrite_all(self._fd, view[start:end], offset + start)
        except OSError as err:
            raise SourceError(f"{self.description}: write at {offset}: {err.strerror}") from None

    def write_many(self, writes: Iterable[tuple[int, Data]]) -> None:
        for offset, data in writes:
            self.write(offset, data)

    def write_zeroes(self, offset: int, length: int) -> None:
        if self.is_device:
            try:
                fcntl.ioctl(self._fd, BLKZEROOUT, struct.pack("QQ", offset, length))
                return
            except OSError:
                pass
        pos, end = offset, offset + length
        while pos < end:
            n = min(len(ZEROS), end - pos)
            self.write(pos, memoryview(ZEROS)[:n])
            pos += n

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise SourceError(f"{self.description}: cannot sync: {err.strerror}") from None
        finally:
            os.close(self._fd)
            self._fd = -1


class NbdTarget:
    """A writable NBD export (its existing content is overwritten, holes zeroed)."""

    def __init__(self, uri: str, size: int, zeroed: bool = False) -> None:
        self.description = uri
        self.size = size
        self.zeroed = zeroed
        self.parallel = False
        self.client = NbdClient.connect(uri)
        if self.client.read_only:
            self.client.close()
            raise UsageError(f"{uri} is a read-only export")
        if self.client.size < size:
            self.client.close()
            raise UsageError(f"{uri} holds {self.client.size} bytes; the image needs {size}")

    def write(self, offset: int, data: Data) -> None:
        self.write_many([(offset, data)])

    def write_many(self, writes: Iterable[tuple[int, Data]]) -> None:
        try:
            self.client.write_many(writes, depth=8)
        except NbdError as err:
            raise SourceError(f"{self.description}: {err}") from None

    def write_zeroes(self, offset: int, length: int) -> None:
        try:
            self.client.write_zeroes(offset, length)
        except NbdError as err:
            raise SourceError(f"{self.description}: {err}") from None

    def close(self) -> None:
        try:
            self.client.flush()
        except NbdError as err:
            raise SourceError(f"{self.description}: flush failed: {err}") from None
        finally:
            self.client.close()


class Qcow2Target(NbdTarget):
    """A new qcow2 file, written through a private qemu-nbd; with `backing`
    ((absolute path, format)), an overlay on that image: unwritten ranges read
    from it (so it is not `zeroed`), and its format is written into the
    overlay's header, never left for qemu to probe."""

    def __init__(self, path: str, size: int, backing: tuple[str, str] | None = None) -> None:
        args = [need_tool(QEMU_IMG), "create", "-q", "-f", "qcow2"]
        if backing is not None:
            args += ["-b", backing[0], "-F", backing[1]]
        done = subprocess.run(
            [*args, path, str(size)],
            capture_output=True,
            text=True,
            env=child_environment(),
        )
        if done.returncode != 0:
            raise SourceError(f"{path}: cannot create: {done.stderr.strip()}")
        self.child = QemuNbdChild(path, "qcow2", writable=True, follow=backing is not None)
        try:
            super().__init__(self.child.uri, size, zeroed=backing is None)
        except BaseException:
            self.child.close()
            raise
        self.description = path

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.child.close()


def open_target(spec: str, size: int, fmt: str = "raw") -> BlockTarget:
    if spec.startswith(("nbd://", "nbd+unix://")):
        if fmt != "raw":
            raise UsageError("--format applies to files; an NBD target receives the disk as is")
        return NbdTarget(spec, size)
    if fmt == "qcow2":
        return Qcow2Target(spec, size)
    if fmt != "raw":
        raise UsageError(f"--format {fmt}: use raw or qcow2")
    return FileTarget(spec, size)
