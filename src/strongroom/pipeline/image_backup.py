"""Block image backup: read the blocks a tracker names, store the changed ones.

One pass in address order. For every block of the new map:
- not named by the tracker: the parent's entry stands (no read);
- wholly inside a zero extent the source reported: a hole (no read);
- otherwise it is read (pipelined on this thread), then checked for zeros,
  hashed, compared with the index, and compressed and sealed on `workers`
  threads; an all-zero block becomes a hole. The sealed chunks go to their
  packs on a writer thread of their own (`ChunkWriter`), so that reading never
  waits for a pack write.
Threads, not processes: keyed BLAKE3 and zstd release the GIL on a block
(zstd, most of the CPU, runs on both cores), AES-GCM holds it for ~0.15 ms a
MiB; handing 1 MiB blocks to worker processes would copy more than that
(docs/performance.md, "Block images on both cores").
The map, and so the point, does not depend on the number of workers: each
block's entry is its content's id, set in address order.
The map is stored only after every chunk it names is durable (the writer
drained, then flush), and the caller writes the point after that: the write
order of docs/design.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from strongroom.cpu import resolve_jobs
from strongroom.errors import Interrupted
from strongroom.model.blockmap import BlockMap
from strongroom.pipeline.blockmaps import save_block_map
from strongroom.pipeline.chunk_writer import ChunkWriter
from strongroom.pipeline.ordered import OrderedWork
from strongroom.repository.store import ChunkStore
from strongroom.sources.block import BlockSource, Data
from strongroom.trackers.changes import ChangeSet, Mask
from strongroom.types import Progress, ProgressCallback, no_progress

_PROGRESS_INTERVAL = 0.2
Sealed = bytes | bytearray


@dataclass
class ImageBackupSummary:
    size: int = 0
    block_size: int = 0
    blocks: int = 0
    tracker: str = ""
    tracker_note: str = ""
    blocks_examined: int = 0  # named by the tracker (or all)
    blocks_read: int = 0
    bytes_read: int = 0  # what the source delivered
    blocks_changed: int = 0  # entry differs from the parent's
    bytes_changed: int = 0
    blocks_new: int = 0  # chunks not in the repository before
    data_added: int = 0
    data_added_stored: int = 0
    holes: int = 0
    map_root: str = ""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The fields but the map's root (the point has it) and the warnings."""
        doc = asdict(self)
        del doc["map_root"], doc["warnings"]
        return doc


def is_zero(data: Data) -> bool:
    """Whether a block is all zeros, without copying it: numpy reads the buffer
    in place (~50 us a MiB, a memcmp's speed; comparing a memoryview with
    bytes would go element by element, 40x slower)."""
    wide = len(data) % 8 == 0
    return not np.frombuffer(data, dtype=np.uint64 if wide else np.uint8).any()


def zero_blocks(source: BlockSource, block_size: int, blocks: int) -> Mask:
    """Blocks that the source says read as zeros in their entirety."""
    zero = np.zeros(blocks, dtype=np.bool_)
    for ext in source.allocation():
        if not ext.zero:
            continue
        first = -(-ext.offset // block_size)  # first block starting inside
        end_block = ext.end // block_size  # blocks ending inside
        if ext.end >= source.size:
            end_block = blocks  # a short last block counts as whole
        if end_block > first:
            zero[first:end_block] = True
    return zero


class ImageBackup:
    """One image backup run; `run()` once."""

    def __init__(
        self,
        repo: ChunkStore,
        source: BlockSource,
        block_size: int,
        parent: BlockMap | None,
        changes: ChangeSet,
        progress: ProgressCallback = no_progress,
        cancel: threading.Event | None = None,
        workers: int | None = None,
        dry_run: bool = False,
    ) -> None:
        self.repo = repo
        self.source = source
        self.block_size = block_size
        self.parent = parent if parent is not None and parent.block_size == block_size else None
        self.changes = changes
        self.report = progress
        self.cancel = cancel or threading.Event()
        self.workers = resolve_jobs(workers)  # None: strongroom.cpu.default_jobs()
        self.dry_run = dry_run
        self.progress = Progress(job="backup")
        self.summary = ImageBackupSummary(
            size=source.size, block_size=block_size, tracker=changes.tracker
        )
        self.summary.tracker_note = changes.note
        self._last_report = 0.0
        # --dry-run: the blocks' chunks the store did not know, by length (a
        # backup through a server asks the server about them: `dry_new`)
        self._dry_seen: dict[bytes, int] = {}

    @property
    def dry_new(self) -> dict[bytes, int]:
        """After a dry run: the data chunks read that the store did not know."""
        return self._dry_seen

    def run(self) -> BlockMap:
        src, bs = self.source, self.block_size
        # The repository's counters cover its whole session (a VM backup runs
        # one pipeline per disk): this run's share is the difference.
        raw_before = self.repo.stats.bytes_added_raw
        stored_before = self.repo.stats.bytes_added_stored
        new = self.parent.resized(src.size) if self.parent else BlockMap.empty(src.size, bs)
        old = self.parent.resized(src.size) if self.parent else None
        blocks = new.blocks
        self.summary.blocks = blocks
        if old is None or self.changes.blocks is None:
            todo = np.ones(blocks, dtype=np.bool_)
        else:
            todo = np.zeros(blocks, dtype=np.bool_)
            n = min(len(self.changes.blocks), blocks)
            todo[:n] = self.changes.blocks[:n]
            resize = self.parent.changed_by_resize(src.size) if self.parent else range(0)
            todo[resize.start : resize.stop] = True
        # Zero extents are authoritative: a block the source reports as zero
        # where the parent had data changed, whatever a tracker says (a disk
        # shrunk then grown again, a discard a bitmap did not record).
        zero_all = zero_blocks(src, bs, blocks)
        if old is not None:
            todo |= zero_all & ~old.hole_mask()
        self.summary.blocks_examined = int(todo.sum())
        zero = zero_all & todo
        self._set_holes(new, old, zero)
        read = np.flatnonzero(todo & ~zero).tolist()
        self.progress.bytes_total = sum(new.extent(i)[1] for i in read)
        writer = ChunkWriter(self.repo, depth=self.workers + 4, on_added=self._added)
        try:
            with writer, OrderedWork(self.workers, depth=2 * self.workers + 4) as work:
                for offset, data in src.read_blocks(self._ranges(new, read)):
                    if self.cancel.is_set():
                        raise Interrupted("backup interrupted")
                    block = offset // bs
                    self.summary.blocks_read += 1
                    work.submit(self._job(data), self._sink(new, old, block, len(data), writer))
                work.finish()
                writer.drain()
            self.summary.bytes_read = src.bytes_read
            if not self.dry_run:
                self.repo.flush()
                root = save_block_map(self.repo, new)
                self.repo.flush()
                self.summary.map_root = root.hex()
        except BaseException:
            if not self.dry_run:
                self.repo.abandon()
            raise
        stats = self.repo.stats
        self.summary.data_added = stats.bytes_added_raw - raw_before
        self.summary.data_added_stored = stats.bytes_added_stored - stored_before
        self.summary.holes = int(new.hole_mask().sum())
        self._emit(force=True)
        return new

    @staticmethod
    def _ranges(new: BlockMap, read: list[int]) -> Iterator[tuple[int, int]]:
        for i in read:
            yield new.extent(i)

    def _job(self, data: Data):  # type: ignore[no-untyped-def]
        repo, dry = self.repo, self.dry_run

        def job() -> tuple[bytes | None, Sealed | None]:
            if is_zero(data):
                return None, None
            return repo.seal_new(memoryview(data), dry_run=dry)

        return job

    def _added(self, length: int) -> None:
        """A new chunk went into a pack (called on the writer thread, in order)."""
        self.summary.blocks_new += 1
        self.progress.bytes_added += length

    def _sink(  # type: ignore[no-untyped-def]
        self, new: BlockMap, old: BlockMap | None, block: int, length: int, writer: ChunkWriter
    ):
        def sink(result: tuple[bytes | None, Sealed | None]) -> None:
            cid, sealed = result
            if sealed is not None and cid is not None:
                writer.put(cid, sealed, length)
            elif self.dry_run and cid is not None and not self.repo.has_chunk(cid):
                self._dry_seen.setdefault(cid, length)
            self._set(new, old, block, cid)
            self.progress.bytes_done += length
            self._emit()

        return sink

    def _set_holes(self, new: BlockMap, old: BlockMap | None, holes: Mask) -> None:
        """Mark blocks as holes at once (numpy: a sparse disk has millions)."""
        changed = holes & ~old.hole_mask() if old is not None else np.zeros_like(holes)
        count = int(changed.sum())
        self.summary.blocks_changed += count
        self.summary.bytes_changed += count * self.block_size
        if count and changed[-1]:  # a short last block
            self.summary.bytes_changed -= new.blocks * self.block_size - new.size
        new.ids[holes] = 0

    def _set(self, new: BlockMap, old: BlockMap | None, block: int, cid: bytes | None) -> None:
        if (old.get(block) != cid) if old is not None else cid is not None:
            self.summary.blocks_changed += 1
            self.summary.bytes_changed += new.extent(block)[1]
        new.assign(block, cid)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= _PROGRESS_INTERVAL:
            self._last_report = now
            self.report(self.progress)
