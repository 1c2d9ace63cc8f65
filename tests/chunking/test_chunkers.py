"""Chunkers: content-defined (file data) and fixed (block data)."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.chunking import CdcChunker, FixedChunker

# Small sizes so that hypothesis' inputs span many chunks.
MIN, AVG, MAX = 256, 1024, 4096


class ShortReads(io.RawIOBase):
    """A stream that returns at most `step` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def cdc(seed: int = 12345) -> CdcChunker:
    return CdcChunker(MIN, AVG, MAX, seed)


def assert_chunk_sizes(chunks: list[bytes], lo: int, hi: int) -> None:
    for chunk in chunks[:-1]:
        assert lo <= len(chunk) <= hi
    if chunks:
        assert 0 < len(chunks[-1]) <= hi


data_strategy = st.one_of(
    st.binary(max_size=20_000),
    st.integers(0, 2**32).map(
        lambda s: random.Random(s).randbytes(random.Random(s).randint(0, 60_000))
    ),
    # Low-entropy data (long runs) stresses the min/max limits.
    st.lists(st.tuples(st.integers(0, 255), st.integers(1, 9000)), max_size=12).map(
        lambda runs: b"".join(bytes([b]) * n for b, n in runs)
    ),
)


@given(data=data_strategy, seed=st.integers(1, 2**64 - 1))
def test_cdc_chunks_concatenate_to_the_input_within_size_limits(data: bytes, seed: int) -> None:
    chunks = [bytes(c) for c in CdcChunker(MIN, AVG, MAX, seed).cut(data)]
    assert b"".join(chunks) == data
    assert_chunk_sizes(chunks, MIN, MAX)


@given(data=data_strategy, step=st.integers(1, 5000))
def test_cdc_stream_and_buffer_cut_identically(data: bytes, step: int) -> None:
    """Boundaries depend on content only, not on how the stream delivers it."""
    chunker = cdc()
    from_buffer = [bytes(c) for c in chunker.cut(data)]
    from_stream = [bytes(c) for c in chunker.chunks(ShortReads(data, step))]
    assert from_stream == from_buffer


@given(data=data_strategy, seed=st.integers(1, 2**64 - 1))
def test_cdc_is_deterministic_for_a_seed(data: bytes, seed: int) -> None:
    a = [bytes(c) for c in CdcChunker(MIN, AVG, MAX, seed).cut(data)]
    b = [bytes(c) for c in CdcChunker(MIN, AVG, MAX, seed).chunks(io.BytesIO(data))]
    assert a == b


def test_cdc_boundaries_depend_on_the_seed() -> None:
    data = random.Random(1).randbytes(200_000)
    cuts = {
        tuple(len(c) for c in CdcChunker(MIN, AVG, MAX, seed).cut(data)) for seed in (1, 2, 3, 4)
    }
    assert len(cuts) > 1


def test_cdc_resynchronises_after_an_insertion() -> None:
    """The point of content-defined chunking: an insertion near the start changes
    only the chunks around it."""
    data = random.Random(2).randbytes(100_000)
    before = {bytes(c) for c in cdc().cut(data)}
    after = {bytes(c) for c in cdc().cut(data[:500] + b"inserted" + data[500:])}
    assert len(before & after) >= len(before) - 3


def test_cdc_with_repository_defaults_on_a_large_stream() -> None:
    mib = 1024 * 1024
    chunker = CdcChunker(256 * 1024, 768 * 1024, 4 * mib, seed=99)
    data = random.Random(3).randbytes(20 * mib) + bytes(9 * mib)
    chunks = [bytes(c) for c in chunker.chunks(io.BytesIO(data))]
    assert b"".join(chunks) == data
    assert_chunk_sizes(chunks, 256 * 1024, 4 * mib)


@given(data=st.binary(max_size=10_000), shift=st.integers(0, 6), step=st.integers(1, 3000))
def test_fixed_chunker_cuts_aligned_blocks(data: bytes, shift: int, step: int) -> None:
    size = 256 << shift
    chunks = [bytes(c) for c in FixedChunker(size).chunks(ShortReads(data, step))]
    assert b"".join(chunks) == data
    assert all(len(c) == size for c in chunks[:-1])
    assert not chunks or 0 < len(chunks[-1]) <= size


@pytest.mark.parametrize("size", [0, -4, 1000, 3 * 1024])
def test_fixed_chunker_needs_a_power_of_two(size: int) -> None:
    with pytest.raises(ValueError):
        FixedChunker(size)
