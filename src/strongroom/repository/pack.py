"""Pack files: many sealed chunks in one object, with an encrypted header at the end.

Layout (all integers little-endian):

    magic   8 bytes  b"SRPACK01"
    blob*            each a sealed chunk: nonce | ciphertext | tag
    header           sealed (AD = b"pack header"): n entries of ENTRY
    hlen    4 bytes  length of the sealed header

ENTRY (45 bytes): type u8 | chunk id 32 | offset u32 | stored length u32 | raw length u32.
The pack's name is the BLAKE3 of all its bytes, so `check` can verify a pack
without the key, and the header lets a reader rebuild the index from packs alone.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import blake3

from strongroom.errors import IntegrityError
from strongroom.repository.crypto import OVERHEAD, Sealer
from strongroom.repository.format import BlobType
from strongroom.storage.base import TempObject

MAGIC = b"SRPACK01"
_ENTRY = struct.Struct("<B32sIII")
_HLEN = struct.Struct("<I")
ENTRY_SIZE = _ENTRY.size  # one chunk's entry in the (sealed) header
HEADER_AD = b"pack header"
MAX_PACK_SIZE = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class PackEntry:
    type: BlobType
    chunk_id: bytes
    offset: int
    length: int  # stored (sealed) length
    raw_length: int


def blob_ad(chunk_id: bytes, blob_type: BlobType) -> bytes:
    """Associated data binding a sealed chunk to its id and type."""
    return bytes(chunk_id) + bytes([blob_type])


class PackBuilder:
    """Collects sealed chunks for one pack without copying them: the pack is
    written with a gather write of its parts, and hashed part by part."""

    def __init__(self, blob_type: BlobType, stream: TempObject | None = None) -> None:
        """With `stream`, chunks go straight to storage as they arrive (and are hashed
        here) instead of being held in memory until the pack is complete."""
        self.blob_type = blob_type
        self.stream = stream
        self._parts: list[bytes | bytearray] = []
        self._hasher = blake3.blake3()
        self._size = 0
        self.entries: list[PackEntry] = []
        self._append(MAGIC)

    def _append(self, data: bytes | bytearray) -> None:
        if self.stream is not None:
            self.stream.write(data)
            self._hasher.update(data)
        else:
            self._parts.append(data)
        self._size += len(data)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, chunk_id: bytes, sealed: bytes | bytearray, raw_length: int) -> None:
        offset = self._size
        if offset + len(sealed) > MAX_PACK_SIZE:
            raise ValueError("pack would exceed 4 GiB")
        self._append(sealed)
        self.entries.append(PackEntry(self.blob_type, chunk_id, offset, len(sealed), raw_length))

    def finish(self, sealer: Sealer) -> tuple[bytes, list[bytes | bytearray]]:
        """Append header and trailer; return (pack id, parts). The builder is spent.
        When streaming, the parts are already written and the list is empty."""
        header = b"".join(
            _ENTRY.pack(e.type, e.chunk_id, e.offset, e.length, e.raw_length) for e in self.entries
        )
        sealed = sealer.seal(header, HEADER_AD)
        self._append(sealed)
        self._append(_HLEN.pack(len(sealed)))
        if self.stream is None:
            for part in self._parts:
                self._hasher.update(part)
        return self._hasher.digest(), self._parts

    def abort(self) -> None:
        if self.stream is not None:
            self.stream.abort()


def header_length(tail: bytes, pack_size: int, what: str) -> int:
    """Read the sealed header length from the pack's last 4 bytes."""
    if len(tail) < _HLEN.size or pack_size < len(MAGIC) + _HLEN.size + OVERHEAD:
        raise IntegrityError(f"{what} is too short to be a pack")
    (hlen,) = _HLEN.unpack(tail[-_HLEN.size :])
    if hlen < OVERHEAD or hlen > pack_size - len(MAGIC) - _HLEN.size:
        raise IntegrityError(f"{what} has an impossible header length {hlen}")
    return int(hlen)


def parse_header(sealed_header: bytes, sealer: Sealer, what: str) -> list[PackEntry]:
    plain = sealer.open(sealed_header, HEADER_AD, f"header of {what}")
    if len(plain) % _ENTRY.size:
        raise IntegrityError(f"header of {what} has a partial entry")
    entries = []
    for t, cid, off, length, raw in _ENTRY.iter_unpack(plain):
        try:
            btype = BlobType(t)
        except ValueError:
            raise IntegrityError(f"header of {what} has unknown blob type {t}") from None
        entries.append(PackEntry(btype, cid, off, length, raw))
    return entries


def read_pack_header(pack: bytes, sealer: Sealer, what: str) -> list[PackEntry]:
    """Parse the header of a whole pack held in memory, checking its magic and bounds."""
    view = memoryview(pack)
    return read_stored_header(
        lambda off, length: bytes(view[off : off + length]), len(pack), sealer, what
    )


def iter_blobs(pack: bytes, entries: list[PackEntry]) -> Iterator[tuple[PackEntry, memoryview]]:
    view = memoryview(pack)
    for e in entries:
        yield e, view[e.offset : e.offset + e.length]


TRAILER_SIZE = _HLEN.size
SCAN_PIECE = 8 * 1024 * 1024
Reader = Callable[[int, int], bytes]  # (offset, length) -> bytes; fewer only at the end


def read_stored_header(read: Reader, size: int, sealer: Sealer, what: str) -> list[PackEntry]:
    """Parse the header of a stored pack of `size` bytes by reading only its magic,
    trailer and header, never the whole pack (one grown to gigabytes costs a few
    small reads here)."""
    if size < len(MAGIC) + _HLEN.size + OVERHEAD:
        raise IntegrityError(f"{what} is too short to be a pack ({size} bytes)")
    if read(0, len(MAGIC)) != MAGIC:
        raise IntegrityError(f"{what} does not start with the pack magic")
    hlen = header_length(read(size - _HLEN.size, _HLEN.size), size, what)
    end = size - _HLEN.size
    sealed = read(end - hlen, hlen)
    if len(sealed) != hlen:
        raise IntegrityError(f"{what} is shorter than listed")
    entries = parse_header(sealed, sealer, what)
    for e in entries:
        if e.offset < len(MAGIC) or e.offset + e.length > end - hlen:
            raise IntegrityError(f"{what}: chunk {e.chunk_id.hex()[:16]} lies outside the pack")
    return entries


class PackScan:
    """One sequential pass over a stored pack: every byte goes through the hash
    (the pack's name), and the byte ranges asked for are handed out on the way.

    Memory is one piece plus the longest range asked for, whatever the pack's
    size; each byte is fetched once."""

    def __init__(self, read: Reader, size: int, piece: int = SCAN_PIECE) -> None:
        self._read = read
        self.size = size
        self._piece = piece
        self._hasher = blake3.blake3()
        self._pos = 0  # bytes fetched and hashed so far
        self._buf = bytearray()  # bytes [self._buf_start, self._pos)
        self._buf_start = 0
        self.short = False  # the object ended before `size`

    def _fetch(self, keep_from: int) -> bool:
        """Fetch and hash the next piece, keeping its bytes from `keep_from` on."""
        want = min(self._piece, self.size - self._pos)
        if want <= 0 or self.short:
            return False
        data = self._read(self._pos, want)
        if len(data) < want:
            self.short = True
        self._hasher.update(data)
        end = self._pos + len(data)
        if end > keep_from:
            if not self._buf:
                self._buf_start = max(self._pos, keep_from)
            self._buf += memoryview(data)[self._buf_start + len(self._buf) - self._pos :]
        self._pos = end
        return bool(data)

    def ranges(self, wanted: list[tuple[int, int]]) -> Iterator[tuple[int, int, bytes | None]]:
        """Yield (offset, length, bytes or None if beyond the object) in offset order."""
        for off, length in sorted(wanted):
            if off + length > self.size:
                yield off, length, None
                continue
            if off < self._buf_start:  # overlaps an earlier range: fetch it apart
                data = self._read(off, length)
                yield off, length, data if len(data) == length else None
                continue
            if off >= self._pos:
                self._buf = bytearray()
                self._buf_start = self._pos
            else:
                del self._buf[: off - self._buf_start]
                self._buf_start = off
            while self._pos < off + length and self._fetch(keep_from=off):
                pass
            if off + length > self._pos:  # the object ended first (even an empty range)
                yield off, length, None
                continue
            start = off - self._buf_start
            chunk = bytes(self._buf[start : start + length])
            yield off, length, chunk if len(chunk) == length else None

    def digest(self) -> bytes:
        """Hash of the whole object (reads what the ranges did not need)."""
        self._buf = bytearray()
        while self._fetch(keep_from=self.size):
            pass
        return self._hasher.digest()
