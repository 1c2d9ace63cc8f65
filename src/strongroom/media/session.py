"""Codecs of a session's parts (docs/format.md §16.3-16.5): the session header
record that opens its data file, the frame before each pack, and the session
catalog file.

The catalog is the only part that must be trusted, so it is sealed with the
repository's encryption key (AD bound to the cartridge's media id and the
session number: a catalog copied onto another cartridge or position does not
open). Everything in the data file is checked against it: a pack's bytes hash
to its id (BLAKE3, as a pack's name in the repository), the frame and the
header must say what the catalog says. The key files travel in the clear
before the sealed part, as they lie in a repository: they are what a
password opens, and the sealed part lists their hashes.

All parsing is of hostile bytes: lengths and counts are bounded before any
allocation, and every failure is an IntegrityError with one line.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from strongroom.errors import IntegrityError
from strongroom.media.label import MAX_TIME
from strongroom.repository.crypto import Sealer, content_hash
from strongroom.repository.keys import MAX_KEY_FILE_SIZE
from strongroom.repository.repo import MAX_CONFIG_SIZE, MAX_POINT_SIZE, is_object_hex

SESSION_MAGIC = b"SRMSESS1"
PACK_MAGIC = b"SRMPACK1"
CATALOG_MAGIC = b"SRMCAT01"
CATALOG_AD = b"strongroom media catalog"
CATALOG_VERSION = 1
# magic, media id, session number, job id, started (Unix seconds)
_SESSION = struct.Struct("<8s16sI16sQ")
_FRAME = struct.Struct("<8s32sQ")  # magic, pack id, pack length
FRAME_SIZE = _FRAME.size
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MAX_KEY_FILES = 16
MAX_CATALOG_SIZE = 256 << 20  # sealed; a catalog is read whole (held in memory)
MAX_ENTRIES = 1 << 22  # points, packs, or packs of one point
MAX_PACK_LENGTH = (1 << 32) - 1  # a pack is at most 4 GiB (§8)
_MAX_INT = (1 << 63) - 1

Read = Callable[[int], bytes]  # exactly n bytes, or IntegrityError


@dataclass(frozen=True)
class SessionHeader:
    """The first record of a session's data file: which session of which
    cartridge this file is. Unauthenticated; the catalog confirms it."""

    media_id: bytes
    session: int
    job: bytes  # 16 bytes: the copy job this session belongs to (spanning)
    started: int

    def encode(self) -> bytes:
        return _SESSION.pack(SESSION_MAGIC, self.media_id, self.session, self.job, self.started)

    @classmethod
    def parse(cls, record: bytes) -> SessionHeader | None:
        """None if the record is no session header (another kind of file)."""
        if len(record) < _SESSION.size or not record.startswith(SESSION_MAGIC):
            return None
        _magic, media_id, session, job, started = _SESSION.unpack_from(record)
        return cls(media_id, session, job, started)


def encode_frame(pack_id: bytes, length: int) -> bytes:
    return _FRAME.pack(PACK_MAGIC, pack_id, length)


def parse_frame(blob: bytes, what: str) -> tuple[bytes, int]:
    """(pack id, length) of a pack frame; IntegrityError naming `what`."""
    if len(blob) < FRAME_SIZE or not blob.startswith(PACK_MAGIC):
        raise IntegrityError(f"{what}: no pack frame")
    _magic, pack_id, length = _FRAME.unpack_from(blob)
    return bytes(pack_id), int(length)


@dataclass(frozen=True)
class PackPlace:
    """Where one whole pack lies: its frame starts record `record` of `file`,
    and it fills `records` records (frame + pack + padding)."""

    pack_id: bytes
    file: int
    record: int
    records: int
    length: int


@dataclass(frozen=True)
class CatalogPoint:
    id: str  # hex; BLAKE3 of `sealed`, as the point's object name
    sealed: bytes  # the point object exactly as the repository stores it
    packs: tuple[bytes, ...]  # every pack its manifests and data need (here or not)


@dataclass
class SessionCatalog:
    repository_id: str
    media_id: bytes
    session: int
    sequence: int
    job: bytes
    time: int
    record_size: int
    data_file: int
    config: bytes  # the sealed config object, as stored
    key_hashes: list[bytes]
    points: list[CatalogPoint] = field(default_factory=list)
    packs: list[PackPlace] = field(default_factory=list)
    deferred: list[bytes] = field(default_factory=list)  # the job's packs left for the next medium
    continued_from: bytes | None = None  # media id holding the job's previous session

    def plaintext(self) -> bytes:
        doc = {
            "v": CATALOG_VERSION,
            "repository": self.repository_id,
            "media": self.media_id,
            "session": self.session,
            "sequence": self.sequence,
            "job": self.job,
            "time": self.time,
            "record_size": self.record_size,
            "data_file": self.data_file,
            "config": self.config,
            "keys": self.key_hashes,
            "points": [[p.id, p.sealed, list(p.packs)] for p in self.points],
            "packs": [[p.pack_id, p.file, p.record, p.records, p.length] for p in self.packs],
            "deferred": self.deferred,
            "continued_from": self.continued_from,
        }
        return bytes(msgpack.packb(doc, use_bin_type=True))

    @classmethod
    def decode(cls, plain: bytes) -> SessionCatalog:
        """The catalog of an opened (authenticated) plaintext; IntegrityError if
        it is malformed. Authentication proves a key holder wrote it, not that
        a key holder's program was right: every field is checked anyway."""
        try:
            doc = msgpack.unpackb(
                plain,
                raw=False,
                strict_map_key=True,
                max_bin_len=MAX_POINT_SIZE,
                max_str_len=1024,
                max_array_len=MAX_ENTRIES,
                max_map_len=64,
            )
            return cls._from_doc(doc)
        except IntegrityError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as err:
            raise IntegrityError(f"session catalog is malformed: {err}") from None

    @classmethod
    def _from_doc(cls, doc: Any) -> SessionCatalog:
        if not isinstance(doc, dict):
            raise TypeError("not a map")
        if _int(doc["v"]) != CATALOG_VERSION:
            raise ValueError(f"catalog format {doc['v']} is not {CATALOG_VERSION}")
        record_size = _int(doc["record_size"])
        if not 512 <= record_size <= 1 << 26:
            raise ValueError(f"record size {record_size}")
        data_file = _int(doc["data_file"])
        if _int(doc["time"]) > MAX_TIME:
            raise ValueError(f"the session's time {doc['time']} is past year 9999")
        packs = []
        for entry in _list(doc["packs"]):
            pack_id, file, record, records, length = _list(entry, 5)
            place = PackPlace(
                _bin(pack_id, 32), _int(file), _int(record), _int(records), _int(length)
            )
            if place.file != data_file or place.length > MAX_PACK_LENGTH:
                raise ValueError(f"pack {place.pack_id.hex()[:16]} is not in the data file")
            if place.records != -(-(FRAME_SIZE + place.length) // record_size) or not place.record:
                raise ValueError(f"pack {place.pack_id.hex()[:16]} has impossible records")
            packs.append(place)
        points = []
        for entry in _list(doc["points"]):
            point_id, sealed, point_packs = _list(entry, 3)
            if not isinstance(point_id, str) or not is_object_hex(point_id):
                raise ValueError("a point id is not 64 hex digits")
            sealed = _bin(sealed)
            if content_hash(sealed).hex() != point_id:
                raise ValueError(f"point {point_id[:8]} does not match its id")
            points.append(
                CatalogPoint(point_id, sealed, tuple(_bin(p, 32) for p in _list(point_packs)))
            )
        repository_id = doc["repository"]
        if not isinstance(repository_id, str) or len(repository_id) != 32:
            raise ValueError("repository id is not 32 hex digits")
        bytes.fromhex(repository_id)
        continued = doc["continued_from"]
        config = _bin(doc["config"])
        if len(config) > MAX_CONFIG_SIZE:
            raise ValueError("config object too large")
        return cls(
            repository_id=repository_id,
            media_id=_bin(doc["media"], 16),
            session=_int(doc["session"]),
            sequence=_int(doc["sequence"]),
            job=_bin(doc["job"], 16),
            time=_int(doc["time"]),
            record_size=record_size,
            data_file=data_file,
            config=config,
            key_hashes=[_bin(k, 32) for k in _list(doc["keys"])],
            points=points,
            packs=packs,
            deferred=[_bin(p, 32) for p in _list(doc["deferred"])],
            continued_from=None if continued is None else _bin(continued, 16),
        )


def _int(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise ValueError(f"{str(value)[:20]} is not a count")
    return value


def _bin(value: Any, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise ValueError("a byte string has the wrong type or length")
    return value


def _list(value: Any, size: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (size is not None and len(value) != size):
        raise ValueError("a list has the wrong type or length")
    return value


def catalog_ad(media_id: bytes, session: int) -> bytes:
    """Binds a sealed catalog to its cartridge and session number."""
    return CATALOG_AD + media_id + _U32.pack(session)


def encode_catalog_file(catalog: SessionCatalog, key_files: list[bytes], sealer: Sealer) -> bytes:
    """The catalog file's bytes (before padding to records)."""
    if len(key_files) > MAX_KEY_FILES:
        raise ValueError(f"at most {MAX_KEY_FILES} key files go on a cartridge")
    sealed = sealer.seal(catalog.plaintext(), catalog_ad(catalog.media_id, catalog.session))
    if len(sealed) > MAX_CATALOG_SIZE:
        raise ValueError("the session catalog is too large; copy fewer points per session")
    parts = [CATALOG_MAGIC, _U32.pack(len(key_files))]
    for key in key_files:
        parts += [_U32.pack(len(key)), key]
    parts += [_U64.pack(len(sealed)), bytes(sealed)]
    return b"".join(parts)


def parse_catalog_file(read: Read) -> tuple[list[bytes], bytes]:
    """(key files, sealed catalog) from a catalog file read through `read`;
    IntegrityError before reading past any out-of-bounds length."""
    if read(len(CATALOG_MAGIC)) != CATALOG_MAGIC:
        raise IntegrityError("the session catalog has no catalog magic")
    (count,) = _U32.unpack(read(_U32.size))
    if count > MAX_KEY_FILES:
        raise IntegrityError(f"the session catalog claims {count} key files")
    keys = []
    for _ in range(count):
        (length,) = _U32.unpack(read(_U32.size))
        if length > MAX_KEY_FILE_SIZE:
            raise IntegrityError(f"the session catalog holds a key file of {length} bytes")
        keys.append(read(length))
    (length,) = _U64.unpack(read(_U64.size))
    if length > MAX_CATALOG_SIZE:
        raise IntegrityError(f"the session catalog claims {length} bytes")
    return keys, read(length)


def bytes_reader(blob: bytes) -> Read:
    """`Read` over bytes in memory (tests, fuzzing)."""
    view = memoryview(blob)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise IntegrityError("the session catalog is cut short")
        out = bytes(view[pos : pos + n])
        pos += n
        return out

    return read


def open_catalog(
    sealed: bytes, key_files: list[bytes], sealer: Sealer, media_id: bytes, session: int
) -> SessionCatalog:
    """Authenticate and decode; the catalog must be this cartridge's `session`
    and list exactly the key files found beside it."""
    what = f"session {session} catalog"
    catalog = SessionCatalog.decode(sealer.open(sealed, catalog_ad(media_id, session), what))
    if catalog.media_id != media_id or catalog.session != session:
        raise IntegrityError(f"{what} belongs to another cartridge or session")
    if [content_hash(k) for k in key_files] != catalog.key_hashes:
        raise IntegrityError(f"{what}: the key files beside it are not the ones it lists")
    return catalog
