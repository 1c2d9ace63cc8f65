"""The label: file 0 of every cartridge strongroom wrote (docs/format.md §16.2).

A plaintext, bounded header that anyone can read (an inventory classifies a
cartridge without the key: whose it is, which barcode it was labelled with,
its pool and place in the pool), then an authenticator made with the
repository's own sealing (`Seal(encryption key, AD, empty)`: an AES-GCM tag
over the header, no second crypto scheme). A reader with the key verifies it;
without the key the header is still a classification, never a proof.

Reading never raises on what is on the tape: every outcome is a
`MediaClass` with a one-line reason (drive failures other than the end of
data are the drive's errors and propagate).
"""

from __future__ import annotations

import enum
import struct
import time
import uuid
from dataclasses import dataclass

from strongroom.errors import DriveError, EndOfData, IntegrityError
from strongroom.media.drive import Drive
from strongroom.repository.crypto import OVERHEAD, Sealer
from strongroom.repository.keys import MasterKey

LABEL_MAGIC = b"SRMLABEL"
LABEL_VERSION = 1
LABEL_AD = b"strongroom media label"
MAX_BARCODE = 32  # the SCSI volume tag field (changer.MAX_BARCODE)
MAX_POOL = 64
# magic, version, media id, repository id, labelled (Unix seconds), sequence in the pool
_FIXED = struct.Struct("<8sH16s16sQI")
MAX_LABEL_SIZE = _FIXED.size + 2 + MAX_BARCODE + MAX_POOL + OVERHEAD
# The last second of year 9999: a time on a cartridge beyond it is no date
# Python (or the catalog) can hold, so it marks the label damaged.
MAX_TIME = 253_402_300_799


class MediaClass(enum.StrEnum):
    """What an inventory makes of a cartridge from its first file."""

    OURS = "ours"  # our repository id and the authenticator verifies with our key
    FOREIGN = "foreign"  # another strongroom repository's (importable with its key)
    SUSPECT = "suspect"  # labelled with another barcode than the changer reads
    UNRECOGNISED = "unrecognised"  # data, but not a strongroom label
    BLANK = "blank"  # nothing recorded
    DAMAGED = "damaged"  # our magic, but lengths or authenticator are wrong


@dataclass(frozen=True)
class Label:
    media_id: bytes  # 16 bytes (a UUID4)
    repository_id: str  # 32 hex digits: the repository config's `id`
    barcode: str
    pool: str
    sequence: int  # this cartridge's number in its pool, from 1
    labelled: int  # Unix seconds
    version: int = LABEL_VERSION

    @property
    def media_uuid(self) -> str:
        return str(uuid.UUID(bytes=self.media_id))

    def header(self) -> bytes:
        """The plaintext part, exactly as recorded (and authenticated)."""
        barcode, pool = (
            _text(self.barcode, MAX_BARCODE, "barcode"),
            _text(self.pool, MAX_POOL, "pool"),
        )
        return (
            _FIXED.pack(
                LABEL_MAGIC,
                self.version,
                self.media_id,
                bytes.fromhex(self.repository_id),
                self.labelled,
                self.sequence,
            )
            + bytes([len(barcode)])
            + barcode
            + bytes([len(pool)])
            + pool
        )

    def encode(self, master: MasterKey) -> bytes:
        header = self.header()
        return header + bytes(Sealer(master.encryption_key).seal(b"", LABEL_AD + header))


def _text(value: str, limit: int, what: str) -> bytes:
    """A barcode or pool name as recorded: UTF-8, printable, 1..limit bytes."""
    raw = value.encode("utf-8")
    if not 0 < len(raw) <= limit or not value.isprintable():
        raise ValueError(f"a {what} is 1..{limit} printable bytes, not {value!r}")
    return raw


@dataclass(frozen=True)
class LabelReading:
    """What file 0 holds, before any key is used: a label with the exact bytes
    its authenticator covers, or why there is none (BLANK, UNRECOGNISED,
    DAMAGED)."""

    state: MediaClass | None  # None: a well-formed label, not yet classified
    reason: str = ""
    label: Label | None = None
    header: bytes = b""
    authenticator: bytes = b""


def parse_label(record: bytes) -> LabelReading:
    """Parse the first record of file 0 (hostile: every length is checked
    before use, nothing is allocated from a length field)."""
    if not record.startswith(LABEL_MAGIC):
        return LabelReading(MediaClass.UNRECOGNISED, "no strongroom label magic")
    if len(record) < _FIXED.size + 1:
        return LabelReading(MediaClass.DAMAGED, "the label is cut short")
    _magic, version, media_id, repo_id, labelled, sequence = _FIXED.unpack_from(record)
    if version != LABEL_VERSION:
        return LabelReading(MediaClass.DAMAGED, f"label format {version} is not {LABEL_VERSION}")
    if labelled > MAX_TIME:
        return LabelReading(MediaClass.DAMAGED, f"the label's time {labelled} is past year 9999")
    pos = _FIXED.size
    fields: list[str] = []
    for limit, what in ((MAX_BARCODE, "barcode"), (MAX_POOL, "pool")):
        if pos >= len(record):
            return LabelReading(MediaClass.DAMAGED, "the label is cut short")
        length = record[pos]
        if not 0 < length <= limit or pos + 1 + length > len(record):
            return LabelReading(MediaClass.DAMAGED, f"the label's {what} length {length} is wrong")
        try:
            text = record[pos + 1 : pos + 1 + length].decode("utf-8")
        except UnicodeDecodeError:
            return LabelReading(MediaClass.DAMAGED, f"the label's {what} is not UTF-8")
        if not text.isprintable():
            return LabelReading(MediaClass.DAMAGED, f"the label's {what} is not printable")
        fields.append(text)
        pos += 1 + length
    if pos + OVERHEAD > len(record):
        return LabelReading(MediaClass.DAMAGED, "the label's authenticator is missing")
    label = Label(media_id, repo_id.hex(), fields[0], fields[1], sequence, labelled, version)
    return LabelReading(None, "", label, record[:pos], record[pos : pos + OVERHEAD])


def verify_label(reading: LabelReading, master: MasterKey) -> Label:
    """The label, once its authenticator verifies with `master`; IntegrityError if not."""
    if reading.label is None:
        raise IntegrityError(f"no label to verify: {reading.reason}")
    Sealer(master.encryption_key).open(reading.authenticator, LABEL_AD + reading.header, "label")
    return reading.label


def read_label(drive: Drive) -> LabelReading:
    """Rewind and read file 0. The drive's own failures (DriveError other than
    the end of data) propagate: they say nothing about the cartridge."""
    drive.rewind()
    try:
        record = drive.read_record()
    except EndOfData:
        return LabelReading(MediaClass.BLANK, "nothing is recorded on the cartridge")
    if record is None:
        return LabelReading(MediaClass.UNRECOGNISED, "the cartridge starts with a file mark")
    return parse_label(record)


@dataclass(frozen=True)
class Classification:
    media_class: MediaClass
    reason: str
    label: Label | None = None


def classify(
    reading: LabelReading, repository_id: str, master: MasterKey, barcode: str | None = None
) -> Classification:
    """Ours, foreign, suspect, or the reading's own state.

    Ours needs our repository id AND an authenticator that verifies with our
    key (a label claiming our id that does not verify is DAMAGED: altered, or
    forged). `barcode` is what the changer reads; a label written under
    another barcode makes the cartridge SUSPECT (ours or foreign alike), and a
    cartridge without a readable barcode is not suspect for that alone."""
    label = reading.label
    if reading.state is not None or label is None:
        return Classification(reading.state or MediaClass.DAMAGED, reading.reason)
    if label.repository_id == repository_id:
        try:
            verify_label(reading, master)
        except IntegrityError as err:
            return Classification(MediaClass.DAMAGED, str(err), label)
    if barcode is not None and label.barcode != barcode:
        why = f"labelled {label.barcode!r}, but the changer reads {barcode!r}"
        return Classification(MediaClass.SUSPECT, why, label)
    if label.repository_id != repository_id:
        why = f"written by repository {label.repository_id[:8]}"
        return Classification(MediaClass.FOREIGN, why, label)
    return Classification(MediaClass.OURS, "", label)


def write_label(
    drive: Drive,
    master: MasterKey,
    repository_id: str,
    barcode: str,
    pool: str,
    sequence: int,
    *,
    media_id: bytes | None = None,
    now: float | None = None,
) -> Label:
    """Label (or relabel) the cartridge: rewind, write the label record and a
    file mark. Tape semantics make this erase everything that followed."""
    if not 0 <= sequence < 1 << 32:
        raise ValueError(f"sequence {sequence} is out of range")
    if not 0 <= (now if now is not None else 0) <= MAX_TIME:
        raise ValueError(f"time {now} is out of range")
    label = Label(
        media_id=media_id or uuid.uuid4().bytes,
        repository_id=repository_id,
        barcode=barcode,
        pool=pool,
        sequence=sequence,
        labelled=int(time.time() if now is None else now),
    )
    blob = label.encode(master)
    if len(blob) > drive.record_size:
        raise DriveError(f"records of {drive.record_size} bytes cannot hold a label")
    drive.rewind()
    drive.write_record(blob + bytes(drive.record_size - len(blob)))
    drive.write_filemark()
    return label
