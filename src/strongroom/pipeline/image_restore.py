"""Block image restore: every block of a map onto a target, holes as holes.

Chunks load (fetch, authenticate, decompress) on worker threads in address
order; a target that takes parallel writes (a file) is written by the
workers, any other (an NBD connection) from this thread in pipelined batches.
Holes are skipped on a target that already reads zeros, zeroed otherwise.
With `only`, just those blocks are written (an overlay on a golden image:
the blocks that differ from it, its holes as explicit zeros). A
damaged chunk is reported with its offset; the rest of the disk is restored
and the block is left zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from strongroom.errors import Interrupted, StrongroomError
from strongroom.model.blockmap import BlockMap
from strongroom.pipeline.ordered import OrderedWork
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore
from strongroom.sources.block import Data
from strongroom.sources.block_targets import BlockTarget
from strongroom.trackers.changes import Mask
from strongroom.types import Progress, ProgressCallback, no_progress

_PROGRESS_INTERVAL = 0.2
_BATCH = 8


@dataclass
class ImageRestoreSummary:
    size: int = 0
    bytes_written: int = 0
    holes: int = 0
    damaged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class ImageRestore:
    def __init__(
        self,
        repo: ChunkStore,
        block_map: BlockMap,
        target: BlockTarget,
        progress: ProgressCallback = no_progress,
        cancel: threading.Event | None = None,
        workers: int = 4,
        only: Mask | None = None,
    ) -> None:
        self.repo = repo
        self.map = block_map
        self.only = only
        self.target = target
        self.report = progress
        self.cancel = cancel or threading.Event()
        self.workers = workers
        self.summary = ImageRestoreSummary(size=block_map.size)
        self.progress = Progress(job="restore", bytes_total=block_map.data_bytes())
        if only is not None:
            self.progress.bytes_total = int(only.sum()) * block_map.block_size
        self._last_report = 0.0
        self._pending: list[tuple[int, Data]] = []

    def run(self) -> ImageRestoreSummary:
        m, target = self.map, self.target
        with OrderedWork(self.workers, depth=2 * self.workers + 4) as work:
            for first, count, is_hole in self._runs():
                if is_hole:
                    self.summary.holes += count
                    if not target.zeroed:
                        offset = m.extent(first)[0]
                        end = sum(m.extent(first + count - 1))
                        self._drain()
                        target.write_zeroes(offset, end - offset)
                    continue
                for block in range(first, first + count):
                    if self.cancel.is_set():
                        raise Interrupted("restore interrupted")
                    cid = m.get(block)
                    assert cid is not None
                    offset, length = m.extent(block)
                    work.submit(self._job(cid, offset, length), self._sink(offset, length))
            work.finish()
        self._drain()
        target.close()
        self._emit(force=True)
        return self.summary

    def _runs(self) -> Iterator[tuple[int, int, bool]]:
        """(first block, count, is_hole) of the blocks to write, in order."""
        if self.only is None:
            yield from self.map.iter_runs()
            return
        hole = self.map.hole_mask()
        run: list[int] = []  # [first, count, is_hole]
        for block in np.flatnonzero(self.only).tolist():
            h = bool(hole[block])
            if run and run[0] + run[1] == block and bool(run[2]) == h:
                run[1] += 1
                continue
            if run:
                yield run[0], run[1], bool(run[2])
            run = [block, 1, int(h)]
        if run:
            yield run[0], run[1], bool(run[2])

    def _job(self, cid: bytes, offset: int, length: int):  # type: ignore[no-untyped-def]
        repo, target = self.repo, self.target

        def job() -> tuple[Data | None, str | None]:
            try:
                data = repo.load_chunk(cid, BlobType.DATA, length)
            except StrongroomError as err:
                return None, str(err)
            if len(data) != length:
                return None, f"chunk {cid.hex()[:16]} holds {len(data)} bytes, expected {length}"
            if target.parallel:
                target.write(offset, data)
                return None, None
            return data, None

        return job

    def _sink(self, offset: int, length: int):  # type: ignore[no-untyped-def]
        def sink(result: tuple[Data | None, str | None]) -> None:
            data, error = result
            if error is not None:
                self.summary.damaged.append(f"block at offset {offset}: {error}")
                if not self.target.zeroed:
                    self.target.write_zeroes(offset, length)
            else:
                if data is not None:
                    self._pending.append((offset, data))
                    if len(self._pending) >= _BATCH:
                        self._drain()
                self.summary.bytes_written += length
            self.progress.bytes_done += length
            self._emit()

        return sink

    def _drain(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.target.write_many(batch)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= _PROGRESS_INTERVAL:
            self._last_report = now
            self.report(self.progress)
