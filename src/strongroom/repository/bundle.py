"""Bundles: many chunks in one binary message between an agent and its backup
server (docs/format.md, "Bundles").

A bundle is `MAGIC`, a record count (u32, big-endian), then each record:
the chunk's 32-byte id, its blob type (u8: 0 data, 1 tree), its raw length
(u32) and its payload's length (u32), then the payload: the chunk in the
repository's compressor format (`Compressor.pack`: a flag byte, then raw
bytes or one zstd frame). Nothing follows the last record.

Contract:
- `parse` is strict and bounded before anything is allocated: at most
  `MAX_RECORDS` records, `MAX_BUNDLE` bytes in all, a raw length within the
  type's `MAX_CHUNK_SIZE`, every payload non-empty and within what is left,
  no id twice, no trailing bytes. Anything else is IntegrityError, one line;
- `verify` proves a record: its payload decompresses (bounded by the
  declared raw length) to exactly that many bytes, which hash (keyed) to its
  id. The server verifies every record before it stores any of a bundle;
- compression stays in this layer (an import contract): agents and the
  server hand bundles around as bytes and records.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from strongroom.errors import IntegrityError
from strongroom.repository.compress import Compressor
from strongroom.repository.format import BlobType
from strongroom.repository.repo import MAX_CHUNK_SIZE

MAGIC = b"SRBNDL1\n"
MEDIA_TYPE = "application/vnd.strongroom.bundle"  # its HTTP Content-Type
MAX_BUNDLE = 32 << 20  # bytes of one bundle, header included
MAX_RECORDS = 16384
MAX_IDS = 8192  # chunk ids of one "which are missing?" question
ID_SIZE = 32
_COUNT = struct.Struct(">I")
_RECORD = struct.Struct(">32sBII")  # id, type, raw length, payload length
# A bundle's chunk may be at most this large once decompressed: the
# repository's own bounds (a data chunk is a CDC maximum or a block).
MAX_RAW = MAX_CHUNK_SIZE


@dataclass(frozen=True)
class Record:
    """One chunk of a bundle: `payload` is in the compressor's format."""

    chunk_id: bytes
    blob_type: BlobType
    raw_length: int
    payload: bytes

    @property
    def size(self) -> int:
        """Bytes this record takes in a bundle."""
        return _RECORD.size + len(self.payload)


def record_overhead() -> int:
    """Bytes a record takes in a bundle beyond its payload."""
    return _RECORD.size


def empty_size() -> int:
    """Bytes of a bundle with no record."""
    return len(MAGIC) + _COUNT.size


def encode(records: Iterable[Record]) -> bytes:
    """The bundle of `records`; ValueError if it breaks a bound (the caller
    splits its batches by `Record.size` to stay under `MAX_BUNDLE`)."""
    items = list(records)
    if len(items) > MAX_RECORDS:
        raise ValueError(f"a bundle holds at most {MAX_RECORDS} records")
    parts = [MAGIC, _COUNT.pack(len(items))]
    for r in items:
        parts.append(_RECORD.pack(r.chunk_id, int(r.blob_type), r.raw_length, len(r.payload)))
        parts.append(r.payload)
    blob = b"".join(parts)
    if len(blob) > MAX_BUNDLE:
        raise ValueError(f"a bundle is at most {MAX_BUNDLE} bytes")
    return blob


def parse(blob: bytes) -> list[Record]:
    """The records of a bundle received from the network (hostile: see the
    module's contract). Payloads are not decompressed here (`verify`)."""
    if len(blob) > MAX_BUNDLE:
        raise IntegrityError(f"bundle is over {MAX_BUNDLE} bytes")
    if len(blob) < empty_size() or blob[: len(MAGIC)] != MAGIC:
        raise IntegrityError("not a strongroom bundle")
    (count,) = _COUNT.unpack_from(blob, len(MAGIC))
    if count > MAX_RECORDS:
        raise IntegrityError(f"bundle declares {count} records, more than {MAX_RECORDS}")
    view = memoryview(blob)
    at = empty_size()
    records: list[Record] = []
    seen: set[bytes] = set()
    for n in range(count):
        if len(blob) - at < _RECORD.size:
            raise IntegrityError(f"bundle ends inside record {n}")
        cid, type_code, raw_length, length = _RECORD.unpack_from(blob, at)
        at += _RECORD.size
        if type_code not in (BlobType.DATA, BlobType.TREE):
            raise IntegrityError(f"bundle record {n}: unknown blob type {type_code}")
        blob_type = BlobType(type_code)
        if raw_length > MAX_RAW[blob_type]:
            raise IntegrityError(f"bundle record {n}: raw length {raw_length} is too large")
        if not 0 < length <= len(blob) - at:
            raise IntegrityError(f"bundle record {n}: payload length {length} is impossible")
        if cid in seen:
            raise IntegrityError(f"bundle record {n}: chunk {cid.hex()[:16]} twice")
        seen.add(cid)
        records.append(Record(cid, blob_type, raw_length, bytes(view[at : at + length])))
        at += length
    if at != len(blob):
        raise IntegrityError(f"bundle has {len(blob) - at} bytes after its last record")
    return records


def verify(record: Record, compressor: Compressor, chunk_id: Callable[[bytes], bytes]) -> bytes:
    """The record's plaintext, proven: IntegrityError naming the chunk (by
    id prefix) if the payload does not decompress to exactly its raw length
    or the content does not hash to its id."""
    what = f"chunk {record.chunk_id.hex()[:16]}"
    try:
        data = compressor.unpack(record.payload, record.raw_length)
    except IntegrityError as err:
        raise IntegrityError(f"{what}: {err}") from None
    if len(data) != record.raw_length:
        raise IntegrityError(f"{what}: holds {len(data)} bytes, not {record.raw_length}")
    if chunk_id(data) != record.chunk_id:
        raise IntegrityError(f"{what}: content does not hash to its id")
    return data
