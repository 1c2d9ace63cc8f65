"""Where the VHD backup mode ships each cycle.

A destination receives, per cycle, one VHD (the metadata disk's first state,
then a differencing disk per cycle) plus a small JSON record, and can say
later whether a cycle arrived (a crash between shipping and committing the
local state is resolved by asking it). `VhdChain` keeps the files as a chain
a user can open without strongroom: in a folder or an S3 bucket, named
`NAME-000000.vhd`, `NAME-000001.vhd`, ... with relative parent locators. The
repository destination lives in services/protect.py, as block points.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from strongroom.errors import IntegrityError, ObjectNotFound
from strongroom.sparse import ZEROS
from strongroom.storage.base import Backend, SparseTemp, StreamingPut, TempObject, get_bounded

_COPY_PIECE = 1 << 20  # at most ZEROS' length


@dataclass(frozen=True)
class Shipment:
    """One cycle's output, ready to go: the VHD for destinations that keep
    files, the metadata disk and its changed ranges for those that keep blocks."""

    name: str  # protected source's name
    cycle: int
    vhd_path: str  # local file holding the VHD ("" when the destination wants none)
    record: dict[str, object]  # cycle metadata, stored beside it
    disk_path: str  # the metadata disk (its first disk_size bytes)
    disk_size: int
    changed: list[tuple[int, int]] | None  # byte ranges the cycle wrote; None: all


class Destination(Protocol):
    description: str
    wants_vhd: bool  # False: ship() reads the disk itself, no VHD is written

    def object_name(self, name: str, cycle: int) -> str:
        """What the cycle's VHD is called there (a differencing disk's parent name)."""
        ...

    def absolute_path(self, name: str, cycle: int) -> str:
        """A full path or URL to the cycle's VHD, for the absolute parent locator."""
        ...

    def ship(self, shipment: Shipment) -> str:
        """Store the shipment; returns where it went (path, URL or point id)."""
        ...

    def arrived(self, name: str, cycle: int, uuid: str) -> str | None:
        """Where cycle `cycle` with disk id `uuid` is, if it arrived whole; else None."""
        ...

    def close(self) -> None: ...


_MAX_RECORD_SIZE = 1 << 20  # a cycle's record is a JSON document of a few KiB


class VhdChain:
    """A chain of VHD files in a storage backend (folder or bucket)."""

    wants_vhd = True

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.description = backend.location

    def object_name(self, name: str, cycle: int) -> str:
        return f"{name}-{cycle:06d}.vhd"

    def absolute_path(self, name: str, cycle: int) -> str:
        return f"{self.backend.location.rstrip('/')}/{self.object_name(name, cycle)}"

    def _record_name(self, name: str, cycle: int) -> str:
        return f"{name}-{cycle:06d}.json"

    def ship(self, shipment: Shipment) -> str:
        target = self.object_name(shipment.name, shipment.cycle)
        if isinstance(self.backend, StreamingPut):
            temp = self.backend.open_temp()
            try:
                with open(shipment.vhd_path, "rb") as f:
                    _copy(f, temp)
                temp.commit(target)
            except BaseException:
                temp.abort()
                raise
        else:
            with open(shipment.vhd_path, "rb") as f:
                self.backend.put(target, f.read())
        # The record goes last: its presence says the VHD is whole.
        record = json.dumps(shipment.record, indent=1, sort_keys=True).encode()
        self.backend.put(self._record_name(shipment.name, shipment.cycle), record)
        return self.absolute_path(shipment.name, shipment.cycle)

    def arrived(self, name: str, cycle: int, uuid: str) -> str | None:
        try:
            record_name = self._record_name(name, cycle)
            record = json.loads(get_bounded(self.backend, record_name, _MAX_RECORD_SIZE))
        except (ObjectNotFound, IntegrityError, ValueError, RecursionError):
            return None  # a damaged record: the cycle is shipped again
        if not isinstance(record, dict) or record.get("uuid") != uuid:
            return None  # not our record: the folder or bucket is anyone's to write
        return self.absolute_path(name, cycle)

    def close(self) -> None:
        self.backend.close()


def _copy(source: BinaryIO, temp: TempObject) -> None:
    """Copy a (sparse) file into a temporary object; its holes stay holes where
    the object can have them (a folder), and become zeros where not (S3)."""
    fd = source.fileno()
    size = os.fstat(fd).st_size
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            data = size  # only a hole remains (ENXIO)
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size) if data < size else size
        if data > pos:
            if isinstance(temp, SparseTemp):
                temp.skip(data - pos)
            else:
                for at in range(pos, data, _COPY_PIECE):
                    temp.write(ZEROS[: min(_COPY_PIECE, data - at)])
        at = data
        while at < hole:
            piece = os.pread(fd, min(_COPY_PIECE, hole - at), at)
            if not piece:
                raise OSError(f"{source.name}: shrank while being shipped")
            temp.write(piece)
            at += len(piece)
        pos = hole
