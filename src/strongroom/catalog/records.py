"""The values the catalog hands out and takes in: plain frozen dataclasses,
never ORM rows, so callers (inventory, labelling, copy-to-media, restore, the
server) depend on these and not on SQLAlchemy.

Times are timezone-aware UTC datetimes. Point and pack ids are the
lowercase hex of their `ObjectId` (64 characters). A medium is named either
by its barcode (`str`) or by the media id written in its label (`UUID`):
`MediumKey`.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from strongroom.errors import CatalogError

MAX_BARCODE = 32  # the SCSI volume tag field (media/changer.py's MAX_BARCODE)
MAX_NAME = 128  # library and pool names

MediumKey = str | uuid.UUID  # a barcode, or the media id of the label


class LibraryKind(enum.StrEnum):
    MTX = "mtx"  # a SCSI changer through mtx
    SCRIPT = "script"  # a Bareos-style changer script
    VIRTUAL = "virtual"  # folders standing in for slots and drives


class MediumState(enum.StrEnum):
    """What a medium is good for (Bareos's volume states, plus what a detailed
    inventory finds on a cartridge it did not know)."""

    FREE = "free"  # labelled, nothing written: may be appended to
    APPENDING = "appending"  # sessions written, room left
    FULL = "full"  # no more sessions
    EXPIRED = "expired"  # retention over: may be recycled (relabelled)
    OFFLINE = "offline"  # retired by the operator (location is `online`)
    SUSPECT = "suspect"  # barcode and label disagree
    CLEANING = "cleaning"  # a cleaning cartridge: never loaded for data
    ERROR = "error"  # a read or write failed: see `error`
    UNRECOGNISED = "unrecognised"  # not strongroom's: free only on request
    FOREIGN = "foreign"  # another strongroom repository's
    BLANK = "blank"  # nothing on it, not labelled yet


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Library:
    name: str
    kind: LibraryKind
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pool:
    """Media that share a retention: a point written to the pool stays on it
    `retention_seconds` after the medium's last session."""

    name: str
    retention_seconds: int = 0
    media_type: str | None = None  # e.g. "LTO-8"; None: any
    cleaning_prefix: str = "CLN"
    notes: str = ""


@dataclass(frozen=True)
class Medium:
    """A cartridge (or removable disk) and where it is.

    `online`: seen in a library by its last inventory. `slot` is its storage
    slot there (for a cartridge in a drive, the slot it came from when the
    changer says so), `drive` the drive address it is loaded in, or None.
    """

    media_id: uuid.UUID
    barcode: str | None = None
    state: MediumState = MediumState.BLANK
    online: bool = False
    library: str | None = None
    slot: int | None = None
    drive: int | None = None
    pool: str | None = None
    label_sequence: int | None = None
    labelled_at: datetime | None = None
    first_written: datetime | None = None
    last_written: datetime | None = None
    bytes_written: int = 0
    sessions: int = 0
    expires_at: datetime | None = None
    repository_id: str | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        """How messages name it: its barcode, else its media id."""
        return self.barcode or str(self.media_id)


@dataclass(frozen=True)
class Drive:
    library: str
    address: int  # data transfer element, from 0 like mtx
    device: str | None = None  # e.g. /dev/nst0
    loaded_barcode: str | None = None  # as the changer last reported it


@dataclass(frozen=True)
class Sighting:
    """Where an inventory saw a barcode: a slot, or a drive (and the slot the
    cartridge came from, when the changer knows)."""

    barcode: str
    slot: int | None = None
    drive: int | None = None


@dataclass(frozen=True)
class LocationChanges:
    """What one inventory's `Catalog.set_locations` changed."""

    known: tuple[str, ...]  # barcodes seen and in the catalog
    back_online: tuple[str, ...]  # of those, the ones that had been offline
    went_offline: tuple[str, ...]  # in this library before, not seen now
    unknown: tuple[str, ...]  # seen, not in the catalog: for a detailed inventory
    # media without a barcode that were in this library: a status cannot see
    # them, so they went offline too (a detailed read brings them back)
    went_offline_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class ContentEntry:
    """One thing on a medium: a point's entry in a session catalog, or a
    pack, at a tape file and its first record. Exactly one of `point_id`,
    `pack_id` is set."""

    session: int
    file_number: int
    first_record: int
    record_count: int
    byte_count: int
    point_id: str | None = None
    pack_id: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """One write session on a medium: the points it holds and, when it spans
    media, the media it continues from and on."""

    number: int
    written_at: datetime
    points: tuple[str, ...] = ()
    catalog_file: int | None = None  # tape file of the session catalog
    bytes_written: int = 0
    continued_from: uuid.UUID | None = None
    continues_on: uuid.UUID | None = None


@dataclass(frozen=True)
class Placement:
    """Where a point or a pack can be read: on which medium, and there."""

    media_id: uuid.UUID
    barcode: str | None
    online: bool
    library: str | None
    slot: int | None
    entry: ContentEntry


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    message: str
    severity: Severity = Severity.INFO
    library: str | None = None
    barcode: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # set when read back

    @classmethod
    def about(
        cls,
        medium: Medium,
        at: datetime,
        kind: str,
        message: str,
        severity: Severity = Severity.INFO,
        library: str | None = None,
    ) -> Event:
        """An event naming a medium (its library, or `library`, and barcode)."""
        return cls(at, kind, message, severity, library or medium.library, medium.barcode)


_HEX_ID = re.compile(r"[0-9a-f]{64}")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # a barcode: printable ASCII, no spaces


def hex_id(value: str | bytes, what: str) -> str:
    """A point or pack id as the catalog stores it; refuses anything else."""
    text = value.hex() if isinstance(value, bytes) else value
    if not _HEX_ID.fullmatch(text):
        raise CatalogError(f"catalog: {what} id {text[:80]!r} is not 64 lowercase hex digits")
    return text


def check_barcode(barcode: str) -> str:
    if not 0 < len(barcode) <= MAX_BARCODE or not _PRINTABLE.fullmatch(barcode):
        raise CatalogError(
            f"catalog: barcode {barcode[:40]!r} is not 1-{MAX_BARCODE} printable characters"
        )
    return barcode


def check_name(name: str, what: str) -> str:
    if not 0 < len(name) <= MAX_NAME or not name.isprintable() or name.strip() != name:
        raise CatalogError(f"catalog: {what} name {name[:40]!r} is not 1-{MAX_NAME} printable")
    return name


# --- the backup server's users (revision 0002) -----------------------------------

MAX_USER_NAME = 64
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Role(enum.StrEnum):
    """What a user of the server may do (each includes the ones below)."""

    ADMINISTRATOR = "administrator"  # users, settings, everything
    OPERATOR = "operator"  # runs and restores
    READ_ONLY = "read-only"  # looks


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str  # argon2id, PHC string; never a password
    role: Role
    created: datetime
    disabled: bool = False
    id: int | None = None


@dataclass(frozen=True)
class LoginSession:
    """A signed-in browser or client: the token itself is never stored."""

    token_digest: str  # hex of a digest of the random token
    user: str
    created: datetime
    expires: datetime
    last_seen: datetime


@dataclass(frozen=True)
class ApiToken:
    """A user's named bearer token for scripts: the token is never stored."""

    name: str
    user: str
    created: datetime
    expires: datetime | None = None  # None: until removed
    last_used: datetime | None = None


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    action: str  # "session.create", "user.create", ...
    target: str
    outcome: str  # "ok", "denied", "failed"
    user: str | None = None
    address: str | None = None
    id: int | None = None


def valid_user_name(name: str) -> bool:
    return _USER_NAME.fullmatch(name) is not None


def check_user_name(name: str) -> str:
    if not _USER_NAME.fullmatch(name):
        raise CatalogError(
            f"catalog: user name {name[:40]!r} is not 1-{MAX_USER_NAME} letters, digits, . _ @ -"
        )
    return name
