"""The VHD backup mode for a block source: a disk, a volume or any image.

The source already is a disk, so no mirror is kept: the local state is a
table of BLAKE3 hashes, one per 64 KiB piece of the disk (16 bytes each:
256 MiB per TiB of disk). A cycle reads the source once in address order,
skipping what it reports as holes, hashes every piece and streams the pieces
whose hash changed straight into the differencing VHD (the first cycle: every
non-zero piece into a dynamic VHD). A piece that became zeros is written as
an explicit zero run, so the parent's old data does not show through.
Memory stays at one read buffer plus the table.
"""

from __future__ import annotations

import contextlib
import os
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from blake3 import blake3

from strongroom.errors import SourceError, UsageError
from strongroom.formats.vhd.structs import SECTOR
from strongroom.formats.vhd.writer import Data, Zeros, check_size
from strongroom.protect.cycles import CycleResult, CycleRunner, ProtectStateError
from strongroom.sources.block import BlockSource
from strongroom.sources.images import OpenRules, open_image, probe_image
from strongroom.sparse import ZEROS

PIECE = 64 << 10
_READ = 4 << 20
_DIGEST = 16
_HASHES = "hashes.npy"
_HASHES_PENDING = "hashes.pending.npy"

Hashes = npt.NDArray[np.uint8]  # (pieces, 16); all zeros: a piece of zeros


@dataclass
class _Scan:
    pieces_changed: int = 0
    bytes_changed: int = 0


class BlockProtection(CycleRunner):
    """Cycles of one block source, found by comparing piece hashes."""

    mode = "block"
    image_format = "raw"

    def check_source(self) -> None:
        if not os.path.exists(self.source):
            raise SourceError(f"{self.source}: no such file or device")

    # --- local state -----------------------------------------------------------

    def adopt_pending(self) -> None:
        # Idempotent: a crash after this rename runs it again on recovery.
        if os.path.exists(self.state.file(_HASHES_PENDING)):
            self.state.rename(_HASHES_PENDING, _HASHES)

    def drop_pending(self) -> None:
        self.state.remove(_HASHES_PENDING)

    def discard_first(self) -> None:
        self.state.remove(_HASHES)
        self.state.remove(_HASHES_PENDING)

    def _load_hashes(self, pieces: int) -> Hashes:
        try:
            table: Hashes = np.load(self.state.file(_HASHES), allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ProtectStateError(f"{self.state.path}: hash table unreadable ({err})") from None
        if table.dtype != np.uint8 or table.shape != (pieces, _DIGEST):
            raise ProtectStateError(f"{self.state.path}: hash table has the wrong shape")
        return table

    def _save_pending(self, table: Hashes) -> None:
        self.state.write_with(_HASHES_PENDING, lambda f: np.save(f, table, allow_pickle=False))

    def _open(self, pinned: str | None = None) -> BlockSource:
        """The source, by the format the user named, else the one the first cycle
        recorded (a guest cannot switch it later), else strongroom's own sniff;
        the files it names only with --allow-backing (sources/images.py)."""
        rules = OpenRules(self.options.image_format, self.options.allow_backing)
        info = probe_image(self.source, pinned, rules)
        self.image_format = info.format
        return open_image(info)

    # --- cycles ------------------------------------------------------------------

    def first_cycle(self) -> CycleResult:
        with contextlib.closing(self._open()) as source:
            size = _disk_size(source)
            doc = {**self.new_doc(size), "image_format": self.image_format}
            table = np.zeros((-(-size // PIECE), _DIGEST), dtype=np.uint8)
            scan = _Scan()
            extents = _changed_pieces(source, size, None, table, scan)
            info = self.write_vhd(size, extents, uuidlib.uuid4(), None, datetime.now(UTC))
            bytes_read = source.bytes_read
        self._save_pending(table)
        counts = {"pieces": scan.pieces_changed}
        where, _ = self.ship(0, info, None, counts, None, scan.bytes_changed)
        self.commit(doc, 0, info, where)
        return self.result(0, info, where, counts, scan.bytes_changed, [], bytes_read)

    def next_cycle(self, doc: dict[str, object]) -> CycleResult:
        size = int(doc["disk_size"])  # type: ignore[call-overload]
        last = self.last(doc)
        cycle = last.cycle + 1
        pinned = doc.get("image_format")
        with contextlib.closing(self._open(str(pinned) if pinned else None)) as source:
            if _disk_size(source) != size:
                raise SourceError(
                    f"{self.source} is now {source.size} bytes, was {size}: a VHD chain keeps"
                    " one size; start a new chain with another --state folder and --name"
                )
            old = self._load_hashes(-(-size // PIECE))
            table = old.copy()
            ident, made = self.begin(doc, cycle)
            try:
                scan = _Scan()
                extents = _changed_pieces(source, size, old, table, scan)
                parent = self.parent_of(last, size)
                info = self.write_vhd(size, extents, ident, parent, made)
                bytes_read = source.bytes_read
                if scan.pieces_changed == 0:
                    self.recover(doc)  # nothing arrived: drops the pending cycle
                    return CycleResult(
                        cycle=None, kind="none", disk_size=size, bytes_read=bytes_read
                    )
                self._save_pending(table)
                counts = {"pieces": scan.pieces_changed}
                where, _ = self.ship(cycle, info, last.uuid, counts, None, scan.bytes_changed)
            except BaseException:
                self.recover(doc)
                raise
        self.commit(doc, cycle, info, where)
        return self.result(cycle, info, where, counts, scan.bytes_changed, [], bytes_read)


def _disk_size(source: BlockSource) -> int:
    """The VHD's size: the source's, rounded up to whole sectors."""
    size = -(-source.size // SECTOR) * SECTOR
    try:
        check_size(size)
    except ValueError as err:
        raise UsageError(f"{source.size}-byte source: {err}") from None
    return size


def _data_ranges(source: BlockSource, size: int) -> list[tuple[int, int]]:
    """What the source says holds data, rounded out to whole pieces and merged."""
    out: list[tuple[int, int]] = []
    for ext in source.allocation():
        if ext.zero or ext.length <= 0:
            continue
        start = ext.offset - ext.offset % PIECE
        end = min(-(-(ext.offset + ext.length) // PIECE) * PIECE, size)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _changed_pieces(
    source: BlockSource, size: int, old: Hashes | None, table: Hashes, scan: _Scan
) -> Iterator[tuple[int, Data]]:
    """Stream the pieces whose hash differs from `old` (every non-zero piece when
    there is none), filling `table` with the new hashes as it goes."""
    ranges = _data_ranges(source, size)
    cursor = 0
    for start, end in ranges:
        # A hole: every piece in it is zeros now.
        yield from _zeroed(cursor, start, old, table, scan)
        stop = min(end, source.size)
        reads = ((pos, min(_READ, stop - pos)) for pos in range(start, stop, _READ))
        for offset, data in source.read_blocks(reads):
            view = memoryview(data)
            if len(view) % SECTOR:
                view = memoryview(bytes(view) + bytes(SECTOR - len(view) % SECTOR))
            for at in range(0, len(view), PIECE):
                piece = view[at : at + PIECE]
                index = (offset + at) // PIECE
                zero = piece == ZEROS[: len(piece)]
                digest = bytes(_DIGEST) if zero else blake3(piece).digest(length=_DIGEST)
                changed = not zero if old is None else digest != old[index].tobytes()
                table[index] = np.frombuffer(digest, dtype=np.uint8)
                if changed:
                    scan.pieces_changed += 1
                    scan.bytes_changed += len(piece)
                    yield offset + at, Zeros(len(piece)) if zero else piece
        cursor = end
    yield from _zeroed(cursor, size, old, table, scan)


def _zeroed(
    start: int, end: int, old: Hashes | None, table: Hashes, scan: _Scan
) -> Iterator[tuple[int, Data]]:
    """Pieces in a hole: changed where they held data before."""
    if start >= end:
        return
    first, last = start // PIECE, -(-end // PIECE)
    table[first:last] = 0
    if old is None:
        return
    had_data = np.flatnonzero(old[first:last].any(axis=1)) + first
    for index in had_data:
        offset = int(index) * PIECE
        length = min(PIECE, end - offset)
        scan.pieces_changed += 1
        scan.bytes_changed += length
        yield offset, Zeros(length)
