"""Codecs of the VHD metadata: the footer, the dynamic header and its parent locators.

All fields are big-endian (Microsoft "Virtual Hard Disk Image Format
Specification" 1.0). Both structures carry a one's-complement checksum of their
bytes taken with the checksum field zeroed. Unpacking checks the cookie, the
checksum and every field a reader relies on, and raises `VhdError` with a
one-line message; packing computes the checksum.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from strongroom.errors import SourceError

SECTOR = 512
FOOTER_SIZE = 512
HEADER_SIZE = 1024
LOCATOR_COUNT = 8
LOCATOR_SIZE = 24
UNALLOCATED = 0xFFFFFFFF
DEFAULT_BLOCK_SIZE = 2 << 20
MAX_SECTORS = 0xFF000000  # 2040 GiB: qemu's VHD_MAX_SECTORS, Hyper-V's limit
MAX_SIZE = MAX_SECTORS * SECTOR
MAX_CHS_SECTORS = 65535 * 16 * 255
MIN_BLOCK_SIZE = SECTOR
MAX_BLOCK_SIZE = 1 << 28

FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
KIND_NAMES = {FIXED: "fixed", DYNAMIC: "dynamic", DIFFERENCING: "differencing"}
KIND_CODES = {name: code for code, name in KIND_NAMES.items()}

FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
FORMAT_VERSION = 0x00010000
FEATURES_RESERVED = 0x2
NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
# qemu uses the footer size (not the CHS product) only for a few creators; Hyper-V's
# `win ` is one, so qemu reads the exact size we write (see the module docstring of
# writer.py).
CREATOR_APP = b"win "
CREATOR_VERSION = 0x000A0000
CREATOR_OS = b"Wi2k"

W2KU = b"W2ku"  # absolute Windows path, UTF-16 LE
W2RU = b"W2ru"  # relative Windows path, UTF-16 LE
PATH_CODES = (W2RU, W2KU, b"Wi2r", b"Wi2k")
MAX_LOCATOR_BYTES = 64 << 10

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH_UNIX = int(_EPOCH.timestamp())

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427s")
_HEADER = struct.Struct(">8sQQIIII16sII512s192s256s")
_LOCATOR = struct.Struct(">4sIIIQ")
assert _FOOTER.size == FOOTER_SIZE and _HEADER.size == HEADER_SIZE
assert _LOCATOR.size == LOCATOR_SIZE


class VhdError(SourceError):
    """A VHD file is damaged, hostile, unsupported, or its parent chain is broken."""


def checksum(data: bytes | bytearray, skip: int) -> int:
    """One's complement of the byte sum, the 4 bytes at `skip` (the field) counted as 0."""
    total = sum(data) - sum(data[skip : skip + 4])
    return ~total & 0xFFFFFFFF


def vhd_time(unix_seconds: float) -> int:
    """Unix time -> VHD time stamp (seconds since 2000-01-01 UTC), clamped to 32 bits."""
    return min(max(int(unix_seconds) - _EPOCH_UNIX, 0), 0xFFFFFFFF)


def unix_time(stamp: int) -> int:
    """VHD time stamp -> Unix time."""
    return stamp + _EPOCH_UNIX


def geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for `size` bytes: the spec's appendix algorithm."""
    total = min(size // SECTOR, MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


@dataclass(frozen=True)
class Footer:
    """The 512-byte hard disk footer (also copied at offset 0 of sparse disks)."""

    kind: int
    current_size: int
    uuid: uuidlib.UUID
    data_offset: int = NO_DATA_OFFSET
    timestamp: int = 0
    original_size: int | None = None
    geometry: tuple[int, int, int] | None = None
    creator_app: bytes = CREATOR_APP
    creator_version: int = CREATOR_VERSION
    creator_os: bytes = CREATOR_OS
    features: int = FEATURES_RESERVED
    saved_state: int = 0

    def pack(self) -> bytes:
        cyl, heads, spt = self.geometry or geometry(self.current_size)
        orig = self.current_size if self.original_size is None else self.original_size
        raw = bytearray(
            _FOOTER.pack(
                FOOTER_COOKIE,
                self.features,
                FORMAT_VERSION,
                self.data_offset,
                self.timestamp,
                self.creator_app,
                self.creator_version,
                self.creator_os,
                orig,
                self.current_size,
                cyl,
                heads,
                spt,
                self.kind,
                0,
                self.uuid.bytes,
                self.saved_state,
                b"",
            )
        )
        struct.pack_into(">I", raw, 64, checksum(raw, 64))
        return bytes(raw)

    @classmethod
    def unpack(cls, raw: bytes, where: str = "footer") -> Footer:
        if len(raw) != FOOTER_SIZE:
            raise VhdError(f"VHD {where} is truncated")
        (
            cookie,
            features,
            version,
            data_offset,
            stamp,
            app,
            app_version,
            host_os,
            orig,
            size,
            cyl,
            heads,
            spt,
            kind,
            stored,
            uid,
            saved,
            _,
        ) = _FOOTER.unpack(raw)
        if cookie != FOOTER_COOKIE:
            raise VhdError(f"not a VHD: no 'conectix' cookie in the {where}")
        if checksum(raw, 64) != stored:
            raise VhdError(f"VHD {where} checksum mismatch")
        if version >> 16 != 1:
            raise VhdError(f"unsupported VHD format version {version:#010x}")
        if kind not in KIND_NAMES:
            raise VhdError(f"unsupported VHD disk type {kind}")
        if size % SECTOR:
            raise VhdError(f"VHD size {size} is not a multiple of {SECTOR}")
        return cls(
            kind=kind,
            current_size=size,
            uuid=uuidlib.UUID(bytes=uid),
            data_offset=data_offset,
            timestamp=stamp,
            original_size=orig,
            geometry=(cyl, heads, spt),
            creator_app=app,
            creator_version=app_version,
            creator_os=host_os,
            features=features,
            saved_state=saved,
        )


@dataclass(frozen=True)
class Locator:
    """One parent locator entry: where a platform-specific parent path is stored."""

    code: bytes
    data_space: int
    data_length: int
    data_offset: int

    def pack(self) -> bytes:
        return _LOCATOR.pack(self.code, self.data_space, self.data_length, 0, self.data_offset)

    @classmethod
    def unpack(cls, raw: bytes) -> Locator:
        code, space, length, _reserved, offset = _LOCATOR.unpack(raw)
        return cls(code, space, length, offset)


@dataclass(frozen=True)
class DynamicHeader:
    """The 1024-byte `cxsparse` header of dynamic and differencing disks."""

    table_offset: int
    max_table_entries: int
    block_size: int = DEFAULT_BLOCK_SIZE
    parent_uuid: uuidlib.UUID | None = None
    parent_timestamp: int = 0
    parent_name: str = ""
    locators: tuple[Locator, ...] = field(default_factory=tuple)
    data_offset: int = NO_DATA_OFFSET

    def pack(self) -> bytes:
        name = self.parent_name.encode("utf-16-be")
        if len(name) > 512:
            raise ValueError("VHD parent name longer than 256 UTF-16 units")
        if len(self.locators) > LOCATOR_COUNT:
            raise ValueError("more than 8 VHD parent locators")
        locs = b"".join(loc.pack() for loc in self.locators)
        raw = bytearray(
            _HEADER.pack(
                HEADER_COOKIE,
                self.data_offset,
                self.table_offset,
                FORMAT_VERSION,
                self.max_table_entries,
                self.block_size,
                0,
                (self.parent_uuid or uuidlib.UUID(int=0)).bytes,
                self.parent_timestamp,
                0,
                name,
                locs,
                b"",
            )
        )
        struct.pack_into(">I", raw, 36, checksum(raw, 36))
        return bytes(raw)

    @classmethod
    def unpack(cls, raw: bytes) -> DynamicHeader:
        if len(raw) != HEADER_SIZE:
            raise VhdError("VHD dynamic header is truncated")
        (
            cookie,
            data_offset,
            table_offset,
            version,
            entries,
            block_size,
            stored,
            parent_uid,
            parent_stamp,
            _reserved,
            name,
            locs,
            _,
        ) = _HEADER.unpack(raw)
        if cookie != HEADER_COOKIE:
            raise VhdError("VHD dynamic header has no 'cxsparse' cookie")
        if checksum(raw, 36) != stored:
            raise VhdError("VHD dynamic header checksum mismatch")
        if version >> 16 != 1:
            raise VhdError(f"unsupported VHD dynamic header version {version:#010x}")
        if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
            raise VhdError(f"VHD block size {block_size} is not a power of two in 512 B..256 MiB")
        end = name.find(b"\0\0")
        while end >= 0 and end % 2:  # the terminator must be UTF-16-aligned
            end = name.find(b"\0\0", end + 1)
        text = (name if end < 0 else name[:end]).decode("utf-16-be", errors="replace")
        return cls(
            table_offset=table_offset,
            max_table_entries=entries,
            block_size=block_size,
            parent_uuid=uuidlib.UUID(bytes=parent_uid),
            parent_timestamp=parent_stamp,
            parent_name=text,
            locators=tuple(
                Locator.unpack(locs[i : i + LOCATOR_SIZE])
                for i in range(0, LOCATOR_COUNT * LOCATOR_SIZE, LOCATOR_SIZE)
            ),
            data_offset=data_offset,
        )


def bitmap_size(block_size: int) -> int:
    """Bytes of a block's sector bitmap on disk: one bit per sector, padded to a sector."""
    bits = block_size // SECTOR
    return -(-((bits + 7) // 8) // SECTOR) * SECTOR
