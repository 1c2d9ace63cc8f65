"""Streaming a point's files as tar (POSIX pax) or zip, for the dashboard's
download: each member's header, then its content chunk by chunk as the
repository hands it out, so memory holds one chunk, whatever the size.

Contract: the generators yield bytes in order; a chunk that reads back with
another size than its tree declares raises IntegrityError mid-stream (the
client gets a cut archive, never a wrong one). Tar members are files,
folders and symbolic links with their modes, owners and times; zip members
are files and folders (zip has no portable links).
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from strongroom.errors import IntegrityError
from strongroom.model.names import printable
from strongroom.model.tree import DIR, FILE, SYMLINK, Node
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository

_BLOCK = 512
_ZIP64_FROM = 1 << 31
_ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Member:
    repo: Repository
    path: bytes  # relative: the point's path without its leading "/"
    node: Node

    @property
    def name(self) -> str:
        return self.path.decode("utf-8", "surrogateescape")

    @property
    def size(self) -> int:
        return sum(self.node.chunk_sizes) if self.node.type == FILE else 0

    def content(self) -> Iterator[bytes]:
        for cid, size in zip(self.node.chunks, self.node.chunk_sizes, strict=True):
            data = self.repo.load_chunk(cid, BlobType.DATA, size)
            if len(data) != size:
                raise IntegrityError(
                    f"{printable(self.name)}: chunk {cid.hex()[:16]} has {len(data)} bytes, "
                    f"expected {size}"
                )
            yield data


def tar_stream(members: Iterable[Member]) -> Iterator[bytes]:
    for m in members:
        info = tarfile.TarInfo(m.name)
        node = m.node
        info.mode = node.mode & 0o7777
        info.uid, info.gid = node.uid, node.gid
        info.uname, info.gname = node.user, node.group
        info.mtime = node.mtime_ns // 1_000_000_000
        if node.type == DIR:
            info.type = tarfile.DIRTYPE
        elif node.type == SYMLINK:
            info.type = tarfile.SYMTYPE
            info.linkname = node.link_target.decode("utf-8", "surrogateescape")
        else:
            info.type = tarfile.REGTYPE
            info.size = m.size
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if node.type == FILE:
            yield from m.content()
            if m.size % _BLOCK:
                yield b"\0" * (_BLOCK - m.size % _BLOCK)
    yield b"\0" * (2 * _BLOCK)  # the end of the archive


class _Sink(io.RawIOBase):
    """An unseekable file the zip writer writes to; `take` empties it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def zip_stream(members: Iterable[Member]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for m in members:
            if m.node.type not in (FILE, DIR):
                continue
            when = max(datetime.fromtimestamp(m.node.mtime_ns / 1e9, UTC), _ZIP_EPOCH)
            name = m.name + "/" if m.node.type == DIR else m.name
            info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
            info.external_attr = (m.node.mode & 0o7777) << 16
            if m.node.type == DIR:
                info.external_attr |= 0x10  # MS-DOS directory flag
                zf.writestr(info, b"")
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=m.size >= _ZIP64_FROM) as out:
                    for piece in m.content():
                        out.write(piece)
                        yield sink.take()
            yield sink.take()
    yield sink.take()
