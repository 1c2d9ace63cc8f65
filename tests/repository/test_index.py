"""Index files and the in-memory chunk index."""

from __future__ import annotations

import os
import random
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.repository import index as index_module
from strongroom.repository.format import BlobType
from strongroom.repository.index import ChunkIndex, IndexFile, Location

IDS = st.binary(min_size=32, max_size=32)
U32 = st.integers(0, 2**32 - 1)
entry = st.tuples(IDS, U32, U32, U32, st.sampled_from([0, 1]))
packs_strategy = st.dictionaries(IDS, st.lists(entry, max_size=6), max_size=5)


@given(packs=packs_strategy, supersedes=st.lists(IDS, max_size=3))
def test_index_file_round_trip(
    packs: dict[bytes, list[tuple[bytes, int, int, int, int]]], supersedes: list[bytes]
) -> None:
    built = IndexFile.build(packs, supersedes)
    decoded = IndexFile.decode(built.encode(), "index")
    assert decoded.packs == list(packs)
    assert decoded.supersedes == supersedes
    expected = [
        (cid, pack, off, length, raw, BlobType(t))
        for pack, entries in packs.items()
        for cid, off, length, raw, t in entries
    ]
    assert list(decoded.iter_entries()) == expected


@given(blob=st.binary(max_size=600))
def test_decoding_arbitrary_bytes_raises_only_integrity_error(blob: bytes) -> None:
    for candidate in (blob, index_module.MAGIC + blob):
        try:
            IndexFile.decode(candidate, "index")
        except IntegrityError:
            pass


@given(packs=packs_strategy.filter(lambda p: any(p.values())), keep=st.floats(0, 1))
def test_truncated_index_file_raises_integrity_error(
    packs: dict[bytes, list[tuple[bytes, int, int, int, int]]], keep: float
) -> None:
    blob = IndexFile.build(packs).encode()
    cut = min(int(keep * len(blob)), len(blob) - 1)
    with pytest.raises(IntegrityError):
        IndexFile.decode(blob[:cut], "index")


def test_entry_naming_an_unlisted_pack_is_refused() -> None:
    built = IndexFile.build({os.urandom(32): [(os.urandom(32), 8, 100, 90, 0)]})
    built.entries = built.entries.copy()
    built.entries["pack"] = 3
    with pytest.raises(IntegrityError, match="does not list"):
        IndexFile.decode(built.encode(), "index")


# --- ChunkIndex against a dict ------------------------------------------------

# Ids from few 8-byte prefixes, so that many share the sorted key and lookup has
# to compare the remaining 24 bytes.
prefixes = st.sampled_from([bytes(8), b"\xff" * 8, b"\x00\x01" * 4, b"\x80" + bytes(7)])
clashing_ids = st.tuples(prefixes, st.binary(min_size=24, max_size=24)).map(lambda t: t[0] + t[1])
chunk_ids = st.one_of(IDS, clashing_ids)
operations = st.lists(
    st.tuples(chunk_ids, st.sampled_from([b"p" * 32, b"q" * 32, b"r" * 32]), U32, U32),
    max_size=60,
    unique_by=lambda op: op[0],
)


@given(ops=operations, probes=st.lists(chunk_ids, max_size=20), threshold=st.integers(1, 20))
def test_chunk_index_behaves_like_a_dict(
    ops: list[tuple[bytes, bytes, int, int]], probes: list[bytes], threshold: int
) -> None:
    model: dict[bytes, Location] = {}
    # A low merge threshold makes additions move from the dict to the sorted columns.
    with mock.patch.object(index_module, "_MERGE_THRESHOLD", threshold):
        idx = ChunkIndex()
        for cid, pack, off, length in ops:
            idx.add(cid, pack, off, length)
            model[cid] = Location(pack, off, length)
    assert len(idx) == len(model)
    for cid in list(model) + probes:
        assert idx.lookup(cid) == model.get(cid)
        assert (cid in idx) == (cid in model)
    assert dict(idx.iter_chunks()) == model


@given(files=st.lists(packs_strategy, max_size=4), extra=operations)
def test_chunk_index_from_index_files_and_additions(
    files: list[dict[bytes, list[tuple[bytes, int, int, int, int]]]],
    extra: list[tuple[bytes, bytes, int, int]],
) -> None:
    model: dict[bytes, Location] = {}
    index_files = []
    for packs in files:
        unique: dict[bytes, list[tuple[bytes, int, int, int, int]]] = {}
        for pack, entries in packs.items():
            unique[pack] = []
            for e in entries:
                if e[0] not in model:  # each chunk once: duplicates have no one answer
                    model[e[0]] = Location(pack, e[1], e[2])
                    unique[pack].append(e)
        index_files.append(IndexFile.build(unique))
    idx = ChunkIndex()
    idx.add_files(index_files)
    for cid, pack, off, length in extra:
        if cid not in model:
            idx.add(cid, pack, off, length)
            model[cid] = Location(pack, off, length)
    for cid, loc in model.items():
        assert idx.lookup(cid) == loc


def test_chunk_index_with_many_entries_merges_and_finds_all() -> None:
    """More additions than the merge threshold: most entries end in the sorted columns."""
    rnd = random.Random(5)
    n = index_module._MERGE_THRESHOLD * 2 + 123
    packs = [rnd.randbytes(32) for _ in range(40)]
    ids = [rnd.randbytes(32) for _ in range(n)]
    idx = ChunkIndex()
    for i, cid in enumerate(ids):
        idx.add(cid, packs[i % 40], i, i % 1000)
    assert len(idx) == n
    assert idx.memory_bytes() >= 44 * index_module._MERGE_THRESHOLD * 2
    for i in rnd.sample(range(n), 2000):
        assert idx.lookup(ids[i]) == Location(packs[i % 40], i, i % 1000)
    for _ in range(2000):
        assert idx.lookup(rnd.randbytes(32)) is None
    assert sum(1 for _ in idx.iter_chunks()) == n


def test_bulk_loaded_index_finds_every_entry() -> None:
    rnd = random.Random(6)
    files = []
    expected = {}
    for f in range(5):
        packs: dict[bytes, list[tuple[bytes, int, int, int, int]]] = {}
        for _ in range(4):
            pack = rnd.randbytes(32)
            packs[pack] = []
            for _ in range(5000):
                cid = rnd.randbytes(32)
                off = rnd.randrange(2**32)
                packs[pack].append((cid, off, f, 0, 0))
                expected[cid] = Location(pack, off, f)
        files.append(IndexFile.build(packs))
    idx = ChunkIndex()
    idx.add_files([IndexFile.decode(f.encode(), "i") for f in files])
    assert len(idx) == len(expected)
    for cid, loc in expected.items():
        assert idx.lookup(cid) == loc


def test_ids_beyond_float_precision_are_told_apart() -> None:
    """Sorted keys are uint64: ids whose first 8 bytes differ only in the low bits
    (equal as float64) must not be confused."""
    base = (2**63 + 2**12).to_bytes(8, "big")
    near = (2**63 + 2**12 + 1).to_bytes(8, "big")
    a, b = base + bytes(24), near + bytes(24)
    idx = ChunkIndex()
    idx.add_files([IndexFile.build({b"p" * 32: [(a, 1, 2, 0, 0)]})])
    assert idx.lookup(a) == Location(b"p" * 32, 1, 2)
    assert idx.lookup(b) is None
    idx.add_files([IndexFile.build({b"q" * 32: [(b, 3, 4, 0, 0)]})])
    assert idx.lookup(b) == Location(b"q" * 32, 3, 4)
    assert idx.lookup(a) == Location(b"p" * 32, 1, 2)


def test_duplicate_entries_resolve_to_one_of_their_locations() -> None:
    cid = os.urandom(32)
    idx = ChunkIndex()
    idx.add_files(
        [
            IndexFile.build({b"p" * 32: [(cid, 1, 2, 0, 0)]}),
            IndexFile.build({b"q" * 32: [(cid, 3, 4, 0, 0)]}),
        ]
    )
    assert idx.lookup(cid) in (Location(b"p" * 32, 1, 2), Location(b"q" * 32, 3, 4))


def test_entry_dtype_is_the_documented_49_bytes() -> None:
    assert index_module.ENTRY_DTYPE.itemsize == 49
    assert np.dtype(index_module.ENTRY_DTYPE).names == (
        "id",
        "pack",
        "offset",
        "length",
        "raw",
        "type",
    )
