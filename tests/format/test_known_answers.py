"""Known answers of format 1: the code still makes, and reads, the stored bytes.

The vectors (`tests/data/known-answers-v1.json`, made once by
`tests/format/vectors.py`) pin each step a reader of the format relies on: the
key derivation from the password to the master key's parts, chunk ids,
content-defined chunk boundaries (the chunker is pinned, pyproject.toml), the
tree, block map, VM manifest, config, point, index file and pack encodings, and
sealed objects. Each test checks one step in both directions where the step is
deterministic: today's code gives the stored bytes, and reads them back.
A failure here means a format change: docs/format.md §13 says what to do.
"""

from __future__ import annotations

import base64
import io
import json
import math
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.chunking.cdc import CdcChunker
from strongroom.model.blockmap import decode_root, decode_segment
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import decode_tree, encode_tree
from strongroom.model.vm import VmManifest
from strongroom.repository.compress import Compressor
from strongroom.repository.crypto import ChunkHasher, Sealer, content_hash
from strongroom.repository.format import BlobType
from strongroom.repository.index import IndexFile
from strongroom.repository.keys import MasterKey, derive_kek, open_key_file, parse_key_file
from strongroom.repository.pack import blob_ad, iter_blobs, read_pack_header
from strongroom.repository.repo import RepoConfig
from tests.format import vectors
from tests.format.vectors import KAT_PATH, FixedNonces, input_bytes, xof


@cache
def kat() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(KAT_PATH.read_text())
    return doc


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@cache
def master() -> MasterKey:
    return MasterKey(h(kat()["derived"]["master_secret"]))


def test_the_code_makes_every_stored_answer() -> None:
    """One comparison of everything (the tests below say which step broke)."""
    assert vectors.build() == kat()


def test_password_to_key_encryption_key() -> None:
    v = kat()["kdf"]
    params = parse_key_file(kat()["key_file"]["text"].encode()).params
    assert (params.time_cost, params.memory_kib, params.parallelism) == (
        v["time_cost"], v["memory_kib"], v["parallelism"],
    )  # fmt: skip
    assert derive_kek(v["password"].encode(), h(v["salt"]), params).hex() == v["key_encryption_key"]


def test_key_file_unwraps_to_the_master_secret() -> None:
    v = kat()["key_file"]
    blob = v["text"].encode()
    assert "keys/" + content_hash(blob).hex() == v["name"]
    assert (
        open_key_file(parse_key_file(blob), v["password"].encode()).secret.hex()
        == v["master_secret"]
    )
    # The wrapped secret is Seal(KEK, "strongroom key file v1", secret), §3-4.
    doc = json.loads(blob)
    sealed = base64.b64decode(doc["data"])
    kek = h(kat()["kdf"]["key_encryption_key"])
    plain = AESGCM(kek).decrypt(sealed[:12], sealed[12:], b"strongroom key file v1")
    assert plain.hex() == v["master_secret"]


def test_master_secret_to_working_keys() -> None:
    v = kat()["derived"]
    m = master()
    assert m.encryption_key.hex() == v["encryption_key"]
    assert m.id_key.hex() == v["id_key"]
    assert str(m.chunker_seed) == v["chunker_seed"]


def test_chunk_ids_are_keyed_blake3() -> None:
    hasher = ChunkHasher(master().id_key)
    for v in kat()["chunk_ids"]:
        assert hasher(input_bytes(v["input"])).hex() == v["id"]


@pytest.mark.parametrize("case", range(len(vectors.CDC_CASES)))
def test_content_defined_boundaries_are_pinned(case: int) -> None:
    """Cut in memory and from a stream (as file backups read), the same lengths."""
    v = kat()["cdc"][case]
    data = input_bytes(v["input"])
    chunker = CdcChunker(v["min"], v["avg"], v["max"], int(v["seed"]))
    assert [len(c) for c in chunker.cut(data)] == v["chunk_lengths"]
    assert [len(c) for c in chunker.chunks(io.BytesIO(data))] == v["chunk_lengths"]
    assert sum(v["chunk_lengths"]) == len(data)
    assert len(v["chunk_lengths"]) >= 3


def test_repository_defaults_are_the_pinned_chunker_parameters() -> None:
    v = kat()["cdc"][0]
    config = RepoConfig(id="x")
    assert (config.cdc_min, config.cdc_avg, config.cdc_max) == (v["min"], v["avg"], v["max"])
    assert v["seed"] == kat()["derived"]["chunker_seed"]


def test_sealed_object_opens_and_reseals() -> None:
    v = kat()["sealed"]
    key, ad, sealed = h(v["key"]), h(v["associated_data"]), h(v["sealed"])
    assert Sealer(key).open(sealed, ad, "vector").hex() == v["plaintext"]
    assert sealed[12:] == AESGCM(key).encrypt(sealed[:12], h(v["plaintext"]), ad)
    assert bytes(FixedNonces(key, "sealed").seal(h(v["plaintext"]), ad)) == sealed
    assert len(sealed) == len(h(v["plaintext"])) + 28


def test_stored_chunks_open_decompress_and_match_their_ids() -> None:
    sealer = Sealer(master().encryption_key)
    hasher = ChunkHasher(master().id_key)
    flags = set()
    for v in kat()["stored_chunks"]:
        chunk_id = h(v["id"])
        payload = sealer.open(h(v["stored"]), blob_ad(chunk_id, BlobType(v["blob_type"])), "chunk")
        flags.add(payload[0])
        assert payload[0] == v["flag"]
        data = Compressor(1).unpack(payload, 1 << 20)
        assert data.hex() == v["plaintext"]
        assert hasher(data) == chunk_id
    assert flags == {0, 1}


def test_tree_encoding() -> None:
    v = kat()["tree"]
    nodes = [vectors.node_from_json(n) for n in v["nodes"]]
    encoded = encode_tree(nodes)
    assert encoded.hex() == v["encoded"]
    assert ChunkHasher(master().id_key)(encoded).hex() == v["id"]
    decoded = decode_tree(h(v["encoded"]))
    assert decoded == sorted(nodes, key=lambda n: n.name)


@pytest.mark.parametrize("case", range(len(vectors.BLOCK_MAPS)))
def test_block_map_encoding(case: int) -> None:
    v = kat()["block_maps"][case]
    hasher = ChunkHasher(master().id_key)
    entries = {int(k): h(i) for k, i in v["entries"].items()}
    block_map = vectors.block_map_of(v["size"], v["block_size"], {})
    for block, chunk_id in entries.items():
        block_map.assign(block, chunk_id)
    segments = list(block_map.segments())
    segment_ids = [None if s is None else hasher(s) for s in segments]
    assert [None if i is None else i.hex() for i in segment_ids] == v["segment_ids"]
    root = block_map.encode_root(segment_ids)
    assert root.hex() == v["root"]
    assert hasher(root).hex() == v["root_id"]
    decoded = decode_root(h(v["root"]))
    assert (decoded.size, decoded.block_size) == (v["size"], v["block_size"])
    assert [None if s is None else s.hex() for s in decoded.segments] == v["segment_ids"]
    for index, segment in enumerate(segments):
        if segment is None:
            continue
        ids = decode_segment(segment, decoded.segment_length(index))
        first = index * decoded.segment_blocks
        for row, raw in enumerate(ids):
            assert raw.tobytes() == entries.get(first + row, bytes(32))


def test_vm_manifest_encoding() -> None:
    v = kat()["vm_manifest"]
    encoded = vectors.vm_manifest().encode()
    assert encoded.hex() == v["encoded"]
    decoded = VmManifest.decode(h(v["encoded"]))
    assert decoded == vectors.vm_manifest()
    assert [d.name for d in decoded.disks] == ["disk1", "disk0"]  # configured order, kept


def test_config_encoding() -> None:
    v = kat()["config"]
    assert vectors.CONFIG.encode().decode() == v["text"]
    assert RepoConfig.decode(v["text"].encode()) == vectors.CONFIG
    opened = Sealer(master().encryption_key).open(h(v["sealed"]), b"config", "config")
    assert opened.decode() == v["text"]


def test_point_encoding_and_id() -> None:
    v = kat()["point"]
    doc = RecoveryPoint.from_doc(v["doc"]).to_doc()
    assert json.dumps(doc, sort_keys=True) == v["text"]
    sealed = h(v["sealed"])
    assert Sealer(master().encryption_key).open(sealed, b"point", "point").decode() == v["text"]
    assert content_hash(sealed).hex() == v["id"]


def test_index_file_encoding() -> None:
    v = kat()["index_file"]
    packs = {
        h(pack): [(h(c), off, length, raw, t) for c, off, length, raw, t in rows]
        for pack, rows in v["packs"].items()
    }
    index = IndexFile.build(packs, supersedes=[h(s) for s in v["supersedes"]])
    assert index.encode().hex() == v["encoded"]
    decoded = IndexFile.decode(h(v["encoded"]), "index vector")
    assert [s.hex() for s in decoded.supersedes] == v["supersedes"]
    rows = [
        (c, p, off, length, raw, int(t)) for c, p, off, length, raw, t in decoded.iter_entries()
    ]
    assert rows == [(c, p, *rest) for p, entries in packs.items() for c, *rest in entries]
    sealed = h(v["sealed"])
    assert Sealer(master().encryption_key).open(sealed, b"index", "index").hex() == v["encoded"]
    assert "index/" + content_hash(sealed).hex() == v["name"]


def test_pack_layout() -> None:
    v = kat()["pack"]
    pack_id, pack = vectors.build_pack()
    assert pack.hex() == v["pack"]
    assert f"data/{pack_id.hex()[:2]}/{pack_id.hex()}" == v["name"]
    stored = h(v["pack"])
    assert content_hash(stored) == pack_id
    sealer = Sealer(master().encryption_key)
    entries = read_pack_header(stored, sealer, "pack vector")
    hasher = ChunkHasher(master().id_key)
    chunks = [h(c) for c in v["chunks"]]
    assert [(e.type, e.chunk_id, e.raw_length) for e in entries] == [
        (BlobType.DATA, hasher(c), len(c)) for c in chunks
    ]
    assert entries[0].offset == 8 and stored[:8] == b"SRPACK01"
    for (entry, blob), data in zip(iter_blobs(stored, entries), chunks, strict=True):
        payload = sealer.open(blob, blob_ad(entry.chunk_id, entry.type), "chunk")
        assert Compressor(1).unpack(payload, 1 << 20) == data


def test_inputs_are_the_documented_xof() -> None:
    """xof(label, n) is the BLAKE3 XOF of the label, as the JSON's `about` says."""
    assert xof("abc", 32).hex() == (
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    )


# --- the chunker as docs/format.md §7.2 specifies it ----------------------------------

_M64 = (1 << 64) - 1


def _documented_cut(buf: bytes, mn: int, avg: int, mx: int, gear: list[int], gear_ls: list[int],
                    mask_s: int, mask_l: int) -> int:  # fmt: skip
    """The length of the next chunk of `buf`: format.md §7.2's pseudo-code, literally."""
    n = len(buf)
    if n <= mn:
        return n
    center = avg
    if n > mx:
        n = mx
    elif n < center:
        center = n
    h = 0
    for lo, hi, mask in ((mn, center, mask_s), (center, n, mask_l)):
        mask_ls = (mask << 1) & _M64
        for pos in range(lo - lo % 2, hi - hi % 2, 2):
            h = ((h << 2) + gear_ls[buf[pos]]) & _M64
            if h & mask_ls == 0:
                return pos
            h = (h + gear[buf[pos + 1]]) & _M64
            if h & mask == 0:
                return pos + 1
    return n


def _documented_chunks(data: bytes, mn: int, avg: int, mx: int, seed: int) -> list[int]:
    from pyfastcdc.py.constants import GEAR, GEAR_LS, MASKS

    keyed = seed & ((1 << 62) - 1)
    gear = [g ^ keyed for g in GEAR]
    gear_ls = [g ^ ((keyed << 1) & _M64) for g in GEAR_LS]
    bits = round(math.log2(avg))
    mask_s, mask_l = MASKS[bits + 1], MASKS[bits - 1]
    lengths: list[int] = []
    start = 0
    while start < len(data):
        length = _documented_cut(
            data[start : start + mx], mn, avg, mx, gear, gear_ls, mask_s, mask_l
        )
        lengths.append(length)
        start += length
    return lengths


@pytest.mark.parametrize("case", range(len(vectors.CDC_CASES)))
def test_the_documented_chunker_gives_the_pinned_boundaries(case: int) -> None:
    """An independent implementation of the text of format.md §7.2 (keyed gear
    tables, masks, the two-byte loop) cuts where the pinned library cuts: the
    specification is complete."""
    v = kat()["cdc"][case]
    data = input_bytes(v["input"])
    got = _documented_chunks(data, v["min"], v["avg"], v["max"], int(v["seed"]))
    assert got == v["chunk_lengths"]
