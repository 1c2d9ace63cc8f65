"""Labels and the session catalog codec: classification of every kind of
cartridge, relabelling, and fuzzing of the parsers (docs/format.md §16)."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.media.label import (
    LABEL_MAGIC,
    MediaClass,
    classify,
    parse_label,
    read_label,
    write_label,
)
from strongroom.media.session import (
    CATALOG_MAGIC,
    MAX_CATALOG_SIZE,
    SessionCatalog,
    bytes_reader,
    parse_catalog_file,
)
from strongroom.repository.keys import MasterKey
from tests.media.memory_drive import MemoryDrive, MemoryTape

MASTER = MasterKey(bytes(range(64)))
REPO_ID = uuid.UUID(int=14).hex
RECORD = 4096


def _drive() -> MemoryDrive:
    return MemoryDrive(MemoryTape(), record_size=RECORD)


def _classify(drive: MemoryDrive, barcode: str | None = "A00001L8") -> MediaClass:
    return classify(read_label(drive), REPO_ID, MASTER, barcode).media_class


def test_ours_round_trip() -> None:
    drive = _drive()
    label = write_label(drive, MASTER, REPO_ID, "A00001L8", "offsite", 7, now=1_800_000_000)
    verdict = classify(read_label(drive), REPO_ID, MASTER, "A00001L8")
    assert verdict.media_class is MediaClass.OURS and verdict.label == label
    assert (label.pool, label.sequence, label.labelled) == ("offsite", 7, 1_800_000_000)
    assert _classify(drive, barcode=None) is MediaClass.OURS  # no barcode read: not suspect


def test_foreign_suspect_blank_unrecognised() -> None:
    drive = _drive()
    write_label(drive, MasterKey(bytes(64)), uuid.uuid4().hex, "B00001L8", "p", 1)
    verdict = classify(read_label(drive), REPO_ID, MASTER, "B00001L8")
    assert verdict.media_class is MediaClass.FOREIGN and "written by repository" in verdict.reason
    write_label(drive, MASTER, REPO_ID, "A00001L8", "p", 1)
    assert _classify(drive, "A00009L8") is MediaClass.SUSPECT
    assert _classify(_drive()) is MediaClass.BLANK
    other = _drive()
    other.write_record(b"tar archive" + bytes(RECORD - 11))
    assert _classify(other) is MediaClass.UNRECOGNISED
    marks = _drive()
    marks.write_filemark()
    assert _classify(marks) is MediaClass.UNRECOGNISED


@pytest.mark.parametrize("offset", [12, 45, 56, -1])
def test_an_altered_label_is_damaged(offset: int) -> None:
    drive = _drive()
    write_label(drive, MASTER, REPO_ID, "A00001L8", "offsite", 1)
    assert drive.tape is not None
    record = bytearray(drive.tape.items[0] or b"")
    end = len(record.rstrip(b"\0"))
    record[offset if offset >= 0 else end - 1] ^= 0x01
    drive.tape.items[0] = bytes(record)
    verdict = classify(read_label(drive), REPO_ID, MASTER, None)
    assert verdict.media_class is MediaClass.DAMAGED, verdict


def test_bad_lengths_are_damaged_not_a_crash() -> None:
    good = bytearray(_label_record())
    good[54] = 200  # barcode length beyond its bound
    assert parse_label(bytes(good)).state is MediaClass.DAMAGED
    assert parse_label(LABEL_MAGIC + b"\x01").state is MediaClass.DAMAGED


def test_relabelling_erases_what_followed() -> None:
    drive = _drive()
    write_label(drive, MASTER, REPO_ID, "A00001L8", "old", 1)
    drive.write_record(bytes(RECORD))
    drive.write_filemark()
    write_label(drive, MASTER, REPO_ID, "A00001L8", "new", 2)
    assert drive.tape is not None and len(drive.tape.items) == 2
    assert classify(read_label(drive), REPO_ID, MASTER).label.pool == "new"  # type: ignore[union-attr]


def test_barcode_and_pool_are_checked_on_writing() -> None:
    with pytest.raises(ValueError):
        write_label(_drive(), MASTER, REPO_ID, "X" * 33, "p", 1)
    with pytest.raises(ValueError):
        write_label(_drive(), MASTER, REPO_ID, "A1", "bad\npool", 1)


def _label_record() -> bytes:
    drive = _drive()
    write_label(drive, MASTER, REPO_ID, "A00001L8", "offsite", 1)
    assert drive.tape is not None
    return drive.tape.items[0] or b""


@given(st.binary(max_size=300), st.integers(0, 250))
def test_fuzz_label_parser_never_raises(noise: bytes, keep: int) -> None:
    for record in (noise, LABEL_MAGIC + noise, _label_record()[:keep] + noise):
        reading = parse_label(record)
        assert (reading.state is None) == (reading.label is not None)
        if reading.label is not None:
            verdict = classify(reading, REPO_ID, MASTER, None)
            assert verdict.media_class in set(MediaClass)


@given(st.binary(max_size=400))
def test_fuzz_catalog_file_parser(noise: bytes) -> None:
    for blob in (noise, CATALOG_MAGIC + noise):
        try:
            keys, sealed = parse_catalog_file(bytes_reader(blob))
        except IntegrityError:
            continue
        assert len(keys) <= 16 and len(sealed) <= len(blob)


@given(st.integers(17, 2**32 - 1), st.integers(MAX_CATALOG_SIZE + 1, 2**64 - 1))
def test_huge_counts_are_refused_before_reading(keys: int, length: int) -> None:
    asked: list[int] = []

    def read(n: int) -> bytes:
        asked.append(n)
        return bytes_reader(blob)(n) if False else next(parts)[:n]

    blob = b""
    parts = iter([CATALOG_MAGIC, struct.pack("<I", keys)])
    with pytest.raises(IntegrityError, match="key files"):
        parse_catalog_file(read)
    parts = iter([CATALOG_MAGIC, struct.pack("<I", 0), struct.pack("<Q", length)])
    asked.clear()
    with pytest.raises(IntegrityError, match="claims"):
        parse_catalog_file(read)
    assert max(asked) <= 8


@given(st.binary(max_size=600))
def test_fuzz_catalog_decoder(plain: bytes) -> None:
    try:
        SessionCatalog.decode(plain)
    except IntegrityError:
        pass


@given(
    st.recursive(
        st.none()
        | st.integers(-(2**63), 2**64 - 1)
        | st.binary(max_size=40)
        | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
        ),
        max_leaves=30,
    )
)
def test_fuzz_catalog_decoder_with_structured_documents(doc: object) -> None:
    import msgpack

    valid = _catalog().plaintext()
    base = msgpack.unpackb(valid, raw=False)
    for candidate in (doc, {**base, "packs": doc}, {**base, "points": doc}, {**base, "v": doc}):
        try:
            SessionCatalog.decode(msgpack.packb(candidate, use_bin_type=True))
        except IntegrityError:
            pass


def _catalog() -> SessionCatalog:
    return SessionCatalog(
        repository_id=REPO_ID,
        media_id=bytes(16),
        session=1,
        sequence=1,
        job=bytes(16),
        time=0,
        record_size=RECORD,
        data_file=1,
        config=b"c",
        key_hashes=[bytes(32)],
    )


def test_catalog_round_trip() -> None:
    catalog = _catalog()
    assert SessionCatalog.decode(catalog.plaintext()) == catalog
