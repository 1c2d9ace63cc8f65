"""Index files and the in-memory chunk index."""

from __future__ import annotations

import os
import random
from unittest import mock

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
    assert index_module.entry_dtype().itemsize == 49
    assert index_module.entry_dtype().names == (
        "id",
        "pack",
        "offset",
        "length",
        "raw",
        "type",
    )


# --- dicts for a small repository, columns past the threshold ------------------

index_files = st.lists(
    st.dictionaries(
        st.sampled_from([b"p" * 32, b"q" * 32, b"r" * 32]),
        st.lists(st.tuples(chunk_ids, U32, U32, U32, st.sampled_from([0, 1])), max_size=8),
        max_size=3,
    ),
    max_size=4,
)


@given(files=index_files, session=operations)
def test_small_index_answers_as_the_columns_do(
    files: list[dict[bytes, list[tuple[bytes, int, int, int, int]]]],
    session: list[tuple[bytes, bytes, int, int]],
) -> None:
    """Held in dicts (no numpy) or in columns, the same loads and additions give
    the same lookups, the same duplicates in the same order and the same listing."""
    built = [IndexFile.build(f) for f in files]
    small, columns = ChunkIndex(), ChunkIndex()
    small.add_files(built)
    with mock.patch.object(index_module, "_MERGE_THRESHOLD", 0):
        columns.add_files(built)
    for cid, pack, off, length in session:
        small.add(cid, pack, off, length)
        columns.add(cid, pack, off, length)
    assert not small.columnar
    assert columns.columnar == any(len(f) for f in built)
    probes = {cid for f in files for es in f.values() for cid, *_ in es}
    probes |= {op[0] for op in session} | {os.urandom(32)}
    for cid in probes:
        assert small.lookup(cid) == columns.lookup(cid)
        assert small.lookup_all(cid) == columns.lookup_all(cid)
    assert len(small) == len(columns)
    assert sorted(small.iter_chunks(), key=repr) == sorted(columns.iter_chunks(), key=repr)


def test_growing_past_the_threshold_keeps_every_location() -> None:
    """Loads that cross the threshold move the dicts into columns: nothing is lost,
    a duplicate keeps its first-loaded location first."""
    rnd = random.Random(7)
    dup = rnd.randbytes(32)
    first = IndexFile.build({b"p" * 32: [(dup, 1, 2, 0, 0)]})
    later = [
        IndexFile.build({b"q" * 32: [(rnd.randbytes(32), i, 5, 0, 0) for i in range(6)]})
        for _ in range(3)
    ]
    again = IndexFile.build({b"r" * 32: [(dup, 3, 4, 0, 0)]})
    with mock.patch.object(index_module, "_MERGE_THRESHOLD", 10):
        idx = ChunkIndex()
        idx.add_files([first, later[0]])
        assert not idx.columnar
        idx.add_files([later[1], again, later[2]])
        assert idx.columnar
    assert len(idx) == 2 + 18
    assert idx.lookup(dup) == Location(b"p" * 32, 1, 2)
    assert idx.lookup_all(dup) == [Location(b"p" * 32, 1, 2), Location(b"r" * 32, 3, 4)]
    for f in later:
        for cid, _, off, length, *_ in f.records():
            assert idx.lookup(cid) == Location(b"q" * 32, off, length)


def test_a_small_index_never_imports_numpy() -> None:
    """The point of the dicts: a short backup of a small repository does not pay
    numpy's import (checked in a fresh interpreter)."""
    import subprocess
    import sys

    probe = (
        "import sys, os\n"
        "from strongroom.repository.index import ChunkIndex, IndexFile\n"
        "f = IndexFile.build({b'p' * 32: [(os.urandom(32), 1, 2, 3, 0) for _ in range(500)]})\n"
        "idx = ChunkIndex(); idx.add_files([IndexFile.decode(f.encode(), 'i')])\n"
        "idx.add(os.urandom(32), b'q' * 32, 0, 1)\n"
        "assert len(idx) == 501 and sum(1 for _ in idx.iter_chunks()) == 501\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
