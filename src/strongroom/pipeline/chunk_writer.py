"""A writer thread for sealed chunks, so that reading never waits for a pack.

The backup pipelines read on one thread and seal on a pool; queueing a sealed
chunk into its pack (`ChunkStore.add_sealed`) writes it to a streaming pack
file and hashes it for the pack's name. Done on the reading thread, every
megabyte written (and every stall of the page cache's writeback) stalls the
reads too. `ChunkWriter` moves those calls to one thread of their own.

Contract:
- It is the only caller of `add_sealed` while it runs (the repository's rule:
  one writer thread); chunks are added in the order they were put.
- `put` blocks when `depth` chunks are waiting (bounded memory), and raises
  the writer's first error, if any, so a full disk stops the reader soon.
- `drain` waits until every chunk put is queued in its pack and raises the
  writer's error; only then may the caller `flush` the repository (the write
  order of docs/design.md is unchanged: chunks, then the map, then the point).
- `close` stops the thread without draining what is left (after an error the
  caller abandons the repository's buffers, which must not be touched by the
  writer any more: close first).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore, Sealed

_STOP = None
Added = Callable[[int], None]  # called on the writer thread with a new chunk's raw length


class ChunkWriter:
    def __init__(self, repo: ChunkStore, depth: int = 8, on_added: Added | None = None) -> None:
        self._repo = repo
        self._on_added = on_added
        self._queue: queue.Queue[tuple[bytes, Sealed, int] | None] = queue.Queue(max(1, depth))
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="chunk-writer", daemon=True)
        self._thread.start()

    def put(self, chunk_id: bytes, sealed: Sealed, raw_length: int) -> None:
        """Queue a sealed data chunk for its pack (see the module's contract)."""
        self._raise()
        while True:
            try:
                self._queue.put((chunk_id, sealed, raw_length), timeout=0.5)
                return
            except queue.Full:
                self._raise()  # the writer died while we waited

    def drain(self) -> None:
        """Wait for every chunk put so far to be queued in its pack; stop the thread."""
        while self._thread.is_alive():  # a writer that fails meanwhile stops taking
            try:
                self._queue.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise()

    def close(self) -> None:
        """Stop the thread, dropping chunks not yet written (after an error)."""
        self._stopping = True
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
            self._thread.join(timeout=0.1)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        repo, on_added = self._repo, self._on_added
        while True:
            item = self._queue.get()
            if item is _STOP or self._stopping:
                return
            chunk_id, sealed, raw_length = item
            try:
                if repo.add_sealed(chunk_id, BlobType.DATA, sealed, raw_length) and on_added:
                    on_added(raw_length)
            except BaseException as err:  # handed to the reading thread
                self._error = err
                return

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close()
