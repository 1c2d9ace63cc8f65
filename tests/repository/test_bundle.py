"""The bundle codec: round trip, strict bounds, and a fuzzed parser that
fails only with IntegrityError (never another exception, never a hang)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.repository import bundle
from strongroom.repository.compress import Compressor
from strongroom.repository.crypto import ChunkHasher
from strongroom.repository.format import BlobType

HASH = ChunkHasher(b"k" * 32)
ZSTD = Compressor(3)


def _rec(data: bytes, blob_type: BlobType = BlobType.DATA) -> bundle.Record:
    return bundle.Record(HASH(data), blob_type, len(data), ZSTD.pack(data))


def test_a_bundle_round_trips_and_its_records_verify() -> None:
    records = [_rec(b"a" * 5000), _rec(os.urandom(300), BlobType.TREE), _rec(b"x")]
    parsed = bundle.parse(bundle.encode(records))
    assert parsed == records
    assert [bundle.verify(r, ZSTD, HASH) for r in parsed] == [b"a" * 5000, records[1].payload[1:],
                                                             b"x"]  # fmt: skip


def test_lies_about_content_or_size_are_refused() -> None:
    good = _rec(b"b" * 4000)
    with pytest.raises(IntegrityError, match=good.chunk_id.hex()[:16]):
        bundle.verify(bundle.Record(good.chunk_id, good.blob_type, 4000, ZSTD.pack(b"c" * 4000)),
                      ZSTD, HASH)  # fmt: skip
    with pytest.raises(IntegrityError, match="more than 100"):  # a bomb: bounded by the claim
        bundle.verify(bundle.Record(good.chunk_id, good.blob_type, 100, good.payload), ZSTD, HASH)
    with pytest.raises(IntegrityError, match="twice"):
        bundle.parse(bundle.encode([good, good]))
    blob = bundle.encode([good])
    for bad in (blob + b"\0", blob[:-1], blob.replace(bundle.MAGIC, b"X" * 8)):
        with pytest.raises(IntegrityError):
            bundle.parse(bad)
    header = bundle.MAGIC + struct.pack(">I", bundle.MAX_RECORDS + 1)
    with pytest.raises(IntegrityError, match="records"):
        bundle.parse(header)
    record = struct.pack(">32sBII", b"i" * 32, 0, (64 << 20) + 1, 1)
    huge_raw = bundle.MAGIC + struct.pack(">I", 1) + record + b"\0"
    with pytest.raises(IntegrityError, match="raw length"):
        bundle.parse(huge_raw)


@given(st.binary(max_size=600))
def test_the_parser_fails_only_with_integrity_errors(blob: bytes) -> None:
    for candidate in (blob, bundle.MAGIC + blob):
        try:
            for record in bundle.parse(candidate):
                bundle.verify(record, ZSTD, HASH)
        except IntegrityError:
            pass


@given(st.data())
def test_a_mutated_bundle_fails_cleanly(data: st.DataObject) -> None:
    blob = bytearray(bundle.encode([_rec(b"m" * 700), _rec(b"n" * 10, BlobType.TREE)]))
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] = data.draw(st.integers(0, 255))
    try:
        for record in bundle.parse(bytes(blob)):
            bundle.verify(record, ZSTD, HASH)
    except IntegrityError:
        pass
