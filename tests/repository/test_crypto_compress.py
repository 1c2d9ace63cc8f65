"""Sealing (AES-256-GCM), keyed ids, and the flagged zstd payloads."""

from __future__ import annotations

import os

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.repository.compress import RAW, ZSTD, Compressor
from strongroom.repository.crypto import OVERHEAD, ChunkHasher, Sealer, derive_key

KEY = bytes(range(32))


@given(plain=st.binary(max_size=5000), ad=st.binary(max_size=64))
def test_seal_open_round_trip(plain: bytes, ad: bytes) -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(plain, ad)
    assert len(sealed) == len(plain) + OVERHEAD
    assert sealer.open(bytes(sealed), ad, "x") == plain


@given(plain=st.binary(min_size=1, max_size=500), position=st.floats(0, 1, exclude_max=True))
def test_sealed_damage_is_detected(plain: bytes, position: float) -> None:
    sealer = Sealer(KEY)
    sealed = bytearray(sealer.seal(plain, b"ad"))
    sealed[int(position * len(sealed))] ^= 0x40
    with pytest.raises(IntegrityError):
        sealer.open(bytes(sealed), b"ad", "x")


@given(garbage=st.binary(max_size=200))
def test_opening_garbage_raises_integrity_error(garbage: bytes) -> None:
    with pytest.raises(IntegrityError):
        Sealer(KEY).open(garbage, b"ad", "x")


def test_nonces_are_fresh() -> None:
    sealer = Sealer(KEY)
    assert sealer.seal(b"same", b"") != sealer.seal(b"same", b"")


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        Sealer(b"short")
    with pytest.raises(ValueError):
        ChunkHasher(b"short")


def test_chunk_ids_are_keyed() -> None:
    a, b = ChunkHasher(KEY), ChunkHasher(os.urandom(32))
    assert a(b"data") == a(b"data")
    assert a(b"data") != b(b"data")
    assert len(a(b"data")) == 32


def test_derived_keys_differ_by_context() -> None:
    secret = os.urandom(64)
    assert derive_key("one", secret) != derive_key("two", secret)
    assert derive_key("one", secret) == derive_key("one", secret)


@given(data=st.binary(max_size=20_000), level=st.sampled_from([0, 1, 3, 19]))
def test_compressor_round_trip(data: bytes, level: int) -> None:
    comp = Compressor(level)
    payload = comp.pack(data)
    assert payload[0] in (RAW, ZSTD)
    if level == 0:
        assert payload[0] == RAW
    assert len(payload) <= len(data) + 1  # never worse than raw plus the flag
    assert comp.unpack(payload, len(data)) == data
    assert comp.unpack(payload, 1 << 20) == data


def test_compressible_data_is_compressed() -> None:
    data = b"abc" * 10_000
    payload = Compressor(1).pack(data)
    assert payload[0] == ZSTD and len(payload) < len(data) // 10


@given(payload=st.binary(max_size=300), raw=st.integers(0, 10_000))
def test_unpacking_garbage_raises_only_integrity_error(payload: bytes, raw: int) -> None:
    comp = Compressor(1)
    try:
        comp.unpack(payload, raw)
    except IntegrityError:
        pass


@given(data=st.binary(min_size=100, max_size=5000), cut=st.integers(1, 50))
def test_truncated_zstd_frame_is_integrity_error(data: bytes, cut: int) -> None:
    comp = Compressor(1)
    payload = comp.pack(data * 5)
    assume(payload[0] == ZSTD)  # stored raw when it does not compress: nothing to cut
    with pytest.raises(IntegrityError):
        comp.unpack(payload[:-cut], len(data) * 5)


def test_a_forked_child_never_reuses_the_parents_nonces() -> None:
    """Both sides of a fork keep sealing under one key: their nonces must differ
    (a batch drawn before the fork would otherwise be used twice)."""
    import os

    from strongroom.repository.crypto import NONCE_SIZE, Sealer

    sealer = Sealer(bytes(32))
    sealer.seal(b"x", b"")  # draws this thread's batch of nonces
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ten nonces, to the parent
        try:
            os.write(
                write_end, b"".join(bytes(sealer.seal(b"x", b""))[:NONCE_SIZE] for _ in range(10))
            )
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    mine = b"".join(bytes(sealer.seal(b"x", b""))[:NONCE_SIZE] for _ in range(10))
    theirs = {child[i : i + NONCE_SIZE] for i in range(0, len(child), NONCE_SIZE)}
    assert len(theirs) == 10
    assert not theirs & {mine[i : i + NONCE_SIZE] for i in range(0, len(mine), NONCE_SIZE)}
