"""Pack files: build, parse, and every kind of damage detected as IntegrityError."""

from __future__ import annotations

import os

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.repository.crypto import Sealer
from strongroom.repository.format import BlobType
from strongroom.repository.pack import (
    MAGIC,
    TRAILER_SIZE,
    PackBuilder,
    PackEntry,
    blob_ad,
    iter_blobs,
    read_pack_header,
)

SEALER = Sealer(bytes(range(32)))

chunk_lists = st.lists(
    st.tuples(st.binary(min_size=32, max_size=32), st.binary(max_size=3000)),
    min_size=0,
    max_size=12,
    unique_by=lambda t: t[0],
)


def build(chunks: list[tuple[bytes, bytes]], blob_type: BlobType = BlobType.DATA):
    """Return (pack id, pack bytes) of a pack holding `chunks` [(id, plaintext)]."""
    builder = PackBuilder(blob_type)
    for cid, data in chunks:
        builder.add(cid, SEALER.seal(data, blob_ad(cid, blob_type)), len(data))
    size = builder.size
    pack_id, parts = builder.finish(SEALER)
    pack = b"".join(bytes(p) for p in parts)
    assert len(pack) > size
    return pack_id, pack


def verify(pack: bytes) -> list[tuple[PackEntry, bytes]]:
    """What a reader does: parse the header, then open every blob."""
    entries = read_pack_header(pack, SEALER, "pack")
    return [
        (e, SEALER.open(blob, blob_ad(e.chunk_id, e.type), "chunk"))
        for e, blob in iter_blobs(pack, entries)
    ]


@given(chunks=chunk_lists, tree=st.booleans())
def test_pack_round_trip(chunks: list[tuple[bytes, bytes]], tree: bool) -> None:
    blob_type = BlobType.TREE if tree else BlobType.DATA
    pack_id, pack = build(chunks, blob_type)
    assert pack_id == blake3.blake3(pack).digest()  # the name is checkable without the key
    assert pack.startswith(MAGIC)
    opened = verify(pack)
    assert [(e.chunk_id, data) for e, data in opened] == chunks
    for (e, _), (_, data) in zip(opened, chunks, strict=True):
        assert e.type == blob_type
        assert e.raw_length == len(data)
        assert e.offset >= len(MAGIC)


@given(
    chunks=chunk_lists.filter(bool),
    position=st.floats(0, 1, exclude_max=True),
    flip=st.integers(1, 255),
)
def test_any_flipped_byte_is_detected(
    chunks: list[tuple[bytes, bytes]], position: float, flip: int
) -> None:
    _, pack = build(chunks)
    damaged = bytearray(pack)
    damaged[int(position * len(pack))] ^= flip
    with pytest.raises(IntegrityError):
        verify(bytes(damaged))


@given(chunks=chunk_lists, keep=st.floats(0, 1, exclude_max=True))
def test_truncation_is_detected(chunks: list[tuple[bytes, bytes]], keep: float) -> None:
    _, pack = build(chunks)
    with pytest.raises(IntegrityError):
        verify(pack[: int(keep * len(pack))])


@given(chunks=chunk_lists, extra=st.binary(min_size=1, max_size=100), front=st.booleans())
def test_appended_or_prepended_bytes_are_detected(
    chunks: list[tuple[bytes, bytes]], extra: bytes, front: bool
) -> None:
    _, pack = build(chunks)
    with pytest.raises(IntegrityError):
        verify(extra + pack if front else pack + extra)


@given(blob=st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_integrity_error(blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        read_pack_header(blob, SEALER, "pack")


@given(body=st.binary(max_size=2000), hlen=st.integers(0, 2**32 - 1))
def test_magic_and_any_header_length_raise_only_integrity_error(body: bytes, hlen: int) -> None:
    blob = MAGIC + body + hlen.to_bytes(TRAILER_SIZE, "little")
    with pytest.raises(IntegrityError):
        read_pack_header(blob, SEALER, "pack")


def test_wrong_key_cannot_read_the_header() -> None:
    _, pack = build([(os.urandom(32), b"data")])
    with pytest.raises(IntegrityError):
        read_pack_header(pack, Sealer(os.urandom(32)), "pack")


def test_blob_swapped_between_ids_fails_authentication() -> None:
    """Associated data binds a sealed chunk to its id and type."""
    a, b = os.urandom(32), os.urandom(32)
    sealed = SEALER.seal(b"payload", blob_ad(a, BlobType.DATA))
    assert SEALER.open(sealed, blob_ad(a, BlobType.DATA), "x") == b"payload"
    with pytest.raises(IntegrityError):
        SEALER.open(sealed, blob_ad(b, BlobType.DATA), "x")
    with pytest.raises(IntegrityError):
        SEALER.open(sealed, blob_ad(a, BlobType.TREE), "x")


def test_empty_pack_has_a_valid_header() -> None:
    _, pack = build([])
    assert verify(pack) == []
