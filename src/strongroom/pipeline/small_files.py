"""Small files in batches: one worker job opens, reads, hashes and seals many.

For many small files, opening and reading dominate; doing it on a worker keeps
the walking thread free, and a batch keeps the per-job cost low. A batch holds
at most `BATCH_FILES` files or `BATCH_BYTES` bytes (as the walk saw their
sizes; design §8.1), so the work in flight stays bounded (§8.2).

A batch keeps its own duplicates of the directory descriptors it needs (the
walker closes its own as it leaves a directory); the job closes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from strongroom.chunking import CdcChunker
from strongroom.model.tree import Node
from strongroom.repository.store import ChunkStore
from strongroom.sources.files import open_file, read_xattrs_of

Sealed = bytes | bytearray

BATCH_FILES = 32
BATCH_BYTES = 1024 * 1024


class SmallFile(NamedTuple):
    """What a worker made of one small file."""

    chunks: list[tuple[bytes, int, Sealed | None]]  # id, length, sealed (None: known)
    xattrs: dict[bytes, bytes]
    size: int
    after: os.stat_result  # fstat after reading


@dataclass
class SmallFileBatch:
    """Small files waiting to be handed to a worker as one job."""

    items: list[tuple[int, bytes, bytes, Node]] = field(default_factory=list)
    fds: dict[int, int] = field(default_factory=dict)  # open directory fd -> our dup
    dups: list[int] = field(default_factory=list)
    total: int = 0  # bytes, as the walk saw the sizes
    after: list[Callable[[], None]] = field(default_factory=list)  # deferred callbacks

    def add(self, dir_fd: int, name: bytes, path: bytes, node: Node) -> bool:
        """Queue `name` in `dir_fd`; True when the batch is full."""
        dup = self.fds.get(dir_fd)
        if dup is None:
            dup = self.fds[dir_fd] = os.dup(dir_fd)
            self.dups.append(dup)
        self.items.append((dup, name, path, node))
        self.total += node.size
        return len(self.items) >= BATCH_FILES or self.total >= BATCH_BYTES

    def forget_dir_fd(self, dir_fd: int) -> None:
        """`dir_fd` is about to close; its number may be reused for another directory."""
        self.fds.pop(dir_fd, None)

    def reader(
        self, repo: ChunkStore, limit: int, dry_run: bool
    ) -> Callable[[], list[SmallFile | OSError]]:
        """The worker job: every file read (or its OSError), in order; closes the dups."""

        def job() -> list[SmallFile | OSError]:
            try:
                return [
                    read_small_file(repo, dir_fd, name, limit, dry_run)
                    for dir_fd, name, _, _ in self.items
                ]
            finally:
                for dup in self.dups:
                    os.close(dup)

        return job


def read_small_file(
    repo: ChunkStore, dir_fd: int, name: bytes, limit: int, dry_run: bool
) -> SmallFile | OSError:
    """Read `name` whole, id its chunk(s) and seal the new ones (not in a dry run).

    A file that grew past `limit` since the walk saw it is cut by a chunker of
    this thread's own."""
    try:
        fd = open_file(dir_fd, name)
        with open(fd, "rb", buffering=0, closefd=True) as stream:
            xattrs = read_xattrs_of(fd)
            data = stream.read()  # to EOF, even if it grew since the stat
            after = os.fstat(fd)
    except OSError as err:
        return err
    if len(data) <= limit:
        pieces = [data]
    else:
        cfg = repo.config
        own = CdcChunker(cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max, repo.master.chunker_seed)
        pieces = [bytes(v) for v in own.cut(data)]
    out: list[tuple[bytes, int, Sealed | None]] = []
    for piece in pieces:
        if not piece:
            continue
        cid, sealed = repo.seal_new(piece, dry_run=dry_run)
        out.append((cid, len(piece), sealed))
    return SmallFile(out, xattrs, len(data), after)
