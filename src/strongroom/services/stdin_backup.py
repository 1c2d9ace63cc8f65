"""`backup --stdin`: one file read from standard input, as restic's
`--stdin --stdin-filename NAME` (`pg_dump db | strongroom backup --stdin
--stdin-filename db.sql`).

The stream is cut, hashed and stored as it arrives (never held whole); the
point holds one regular file at `/NAME` (folders on the way for a NAME with
slashes), owned by the user running the backup, mode 0600 (a dump is often
secret), modified now. A stream that ends in an error or an interrupt commits
nothing (what was stored is indexed for the next run, as any interrupted
backup does). It runs on any `ChunkStore`: a local repository, or an agent's
`RemoteStore` (`--server`: the point is the enrolled machine's).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from strongroom.chunking import CdcChunker
from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint, now
from strongroom.model.tree import DIR, FILE, Node, encode_tree
from strongroom.repository.format import BlobType
from strongroom.repository.store import ChunkStore
from strongroom.services.recording import record_point
from strongroom.types import Progress, ProgressCallback, no_progress

READ_SIZE = 1 << 20


@dataclass
class StdinBackupRequest:
    name: str  # the file's path in the point, relative (`db.sql`, `dumps/db.sql`)
    stream: BinaryIO
    host: str = ""
    tags: list[str] = field(default_factory=list)


def stdin_path(name: str) -> list[str]:
    """The components of `--stdin-filename`, checked: relative, no `.`/`..`, no NUL."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(
            f"--stdin-filename {name!r}: give a relative file name such as db.sql or dumps/db.sql"
        )
    if "\0" in name or len(name.encode()) > 4096:
        raise UsageError("--stdin-filename: no NUL, at most 4096 bytes")
    return parts


class _Reader:
    """The stream as pyfastcdc reads it, counting bytes for the progress."""

    def __init__(self, stream: BinaryIO, progress: Progress, report: ProgressCallback) -> None:
        self.stream = stream
        self.progress = progress
        self.report = report

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self.stream.readinto(buffer)  # type: ignore[attr-defined]
        n = n or 0
        self.progress.bytes_done += n
        self.report(self.progress)
        return int(n)

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.progress.bytes_done += len(data)
        self.report(self.progress)
        return data


def backup_stdin(
    repo: ChunkStore, req: StdinBackupRequest, progress: ProgressCallback = no_progress
) -> tuple[RecoveryPoint, dict[str, object]]:
    parts = stdin_path(req.name)
    started = now()
    clock = time.monotonic()
    cfg = repo.config
    chunker = CdcChunker(cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max, repo.master.chunker_seed)
    state = Progress(job="backup", current=req.name)
    node = Node(
        name=parts[-1].encode(),
        type=FILE,
        mode=0o600,
        uid=os.getuid(),
        gid=os.getgid(),
        mtime_ns=time.time_ns(),
    )
    node.ctime_ns = node.atime_ns = node.mtime_ns
    try:
        for piece in chunker.chunks(_Reader(req.stream, state, progress)):
            data = bytes(piece)
            cid, sealed = repo.seal_new(data)
            if sealed is not None:
                repo.add_sealed(cid, BlobType.DATA, sealed, len(data))
            node.chunks.append(cid)
            node.chunk_sizes.append(len(data))
            node.size += len(data)
        tree = repo.put_chunk(BlobType.TREE, encode_tree([node]))
        for folder in reversed(parts[:-1]):
            holder = Node(name=folder.encode(), type=DIR, mode=0o755, subtree=tree)
            holder.uid, holder.gid, holder.mtime_ns = os.getuid(), os.getgid(), node.mtime_ns
            tree = repo.put_chunk(BlobType.TREE, encode_tree([holder]))
        repo.flush()
    except BaseException:
        repo.abandon()
        raise
    stats = repo.stats
    summary: dict[str, object] = {
        "files_new": 1,
        "files_changed": 0,
        "files_unmodified": 0,
        "dirs": len(parts) - 1,
        "total_files": 1,
        "total_bytes": node.size,
        "bytes_read": node.size,
        "chunks_new": stats.chunks_added,
        "data_added": stats.bytes_added_raw,
        "data_added_stored": stats.bytes_added_stored,
        "stdin": True,
        "seconds": round(time.monotonic() - clock, 3),
    }
    point = record_point(
        repo,
        kind=PointKind.FILES,
        time=started,
        host=req.host or socket.gethostname(),
        paths=["/" + req.name],
        tree=tree.hex(),
        parent=None,
        tags=req.tags,
        summary=summary,
    )
    return point, summary
