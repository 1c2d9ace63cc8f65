"""Known-answer vectors of the repository format: fixed inputs, and what today's code
makes of them (`tests/data/known-answers-v1.json`, docs/format.md §13).

`build()` computes every vector from its inputs with strongroom's own code; the
generator (`python3 tests/format/vectors.py`, by hand, once per format version)
writes the JSON, and `test_known_answers.py` checks that the code still gives
the stored answers and reads the stored bytes. The JSON is self-contained, so a
reimplementation can use it without this code: byte strings are lowercase hex,
and test inputs are `xof(label, n)`: the first `n` bytes of the BLAKE3 XOF of
the ASCII `label` (unkeyed).

Sealing draws random nonces; the vectors fix them (`FixedNonces`), which is the
only change to strongroom's behaviour made here. zstd output is not pinned
(another zstd version may compress differently and still be read): the stored
compressed chunk is pinned for reading only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.chunking.cdc import CdcChunker
from strongroom.model.blockmap import BlockMap
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import Node, encode_tree
from strongroom.model.vm import VmDisk, VmManifest
from strongroom.repository.compress import Compressor
from strongroom.repository.crypto import ChunkHasher, Sealer, content_hash
from strongroom.repository.format import BlobType
from strongroom.repository.index import IndexFile
from strongroom.repository.keys import KdfParams, MasterKey, derive_kek
from strongroom.repository.pack import PackBuilder, blob_ad
from strongroom.repository.repo import RepoConfig

KAT_PATH = Path(__file__).resolve().parent.parent / "data" / "known-answers-v1.json"
MiB = 1024 * 1024


def xof(label: str, n: int) -> bytes:
    """Deterministic test input: the BLAKE3 XOF of `label`, `n` bytes."""
    data: bytes = blake3.blake3(label.encode()).digest(length=n)
    return data


class FixedNonces(Sealer):
    """A Sealer whose nonces are xof(label, 12) of successive labels: vectors only."""

    def __init__(self, key: bytes, label: str) -> None:
        super().__init__(key)
        self._label = label
        self._count = 0

    def _nonce(self) -> bytes:
        self._count += 1
        return xof(f"{self._label} nonce {self._count}", 12)


SECRET = xof("strongroom known answers: master secret", 64)
PASSWORD = "correct horse battery staple"
SALT = xof("strongroom known answers: salt", 16)
KDF = KdfParams(time_cost=1, memory_kib=8192, parallelism=1)
KEY_AD = b"strongroom key file v1"


def master() -> MasterKey:
    return MasterKey(SECRET)


# --- the vectors ------------------------------------------------------------------


def kdf_vector() -> dict[str, Any]:
    return {
        "password": PASSWORD,
        "salt": SALT.hex(),
        "time_cost": KDF.time_cost,
        "memory_kib": KDF.memory_kib,
        "parallelism": KDF.parallelism,
        "key_encryption_key": derive_kek(PASSWORD.encode(), SALT, KDF).hex(),
    }


def key_file_vector() -> dict[str, Any]:
    """A key file as `wrap_master_key` writes it, with a fixed salt, nonce and date."""
    kek = derive_kek(PASSWORD.encode(), SALT, KDF)
    nonce = xof("strongroom known answers: key file nonce", 12)
    sealed = nonce + AESGCM(kek).encrypt(nonce, SECRET, KEY_AD)
    doc = {
        "version": 1,
        "kdf": "argon2id",
        "time_cost": KDF.time_cost,
        "memory_kib": KDF.memory_kib,
        "parallelism": KDF.parallelism,
        "salt": base64.b64encode(SALT).decode(),
        "data": base64.b64encode(sealed).decode(),
        "created": "2026-01-01T00:00:00Z",
        "host": "golden",
        "user": "root",
    }
    text = json.dumps(doc, indent=1)
    return {
        "password": PASSWORD,
        "text": text,
        "name": "keys/" + content_hash(text.encode()).hex(),
        "master_secret": SECRET.hex(),
    }


def derived_vector() -> dict[str, Any]:
    m = master()
    return {
        "master_secret": SECRET.hex(),
        "encryption_key": m.encryption_key.hex(),
        "id_key": m.id_key.hex(),
        "chunker_seed": str(m.chunker_seed),
    }


CHUNK_ID_INPUTS = [("empty", 0), ("abc", 3), ("strongroom known answers: one chunk", MiB + 7)]


def chunk_id_vectors() -> list[dict[str, Any]]:
    hasher = ChunkHasher(master().id_key)
    out = []
    for label, n in CHUNK_ID_INPUTS:
        data = b"abc" if label == "abc" else xof(label, n)
        out.append({"input": _describe_input(label, n), "id": hasher(data).hex()})
    return out


def _describe_input(label: str, n: int) -> dict[str, Any]:
    if label == "abc":
        return {"bytes": b"abc".hex()}
    return {"xof": label, "length": n}


def input_bytes(spec: dict[str, Any]) -> bytes:
    if "bytes" in spec:
        return bytes.fromhex(spec["bytes"])
    return xof(spec["xof"], spec["length"])


CDC_CASES = [
    # the defaults of every repository (docs/format.md §6), on 8 MiB
    ("strongroom known answers: cdc default", 8 * MiB + 5, 256 * 1024, 768 * 1024, 4 * MiB),
    # small parameters, many cuts, on 1 MiB
    ("strongroom known answers: cdc small", MiB, 4096, 16384, 65536),
]


def cdc_vectors() -> list[dict[str, Any]]:
    seed = master().chunker_seed
    out = []
    for label, n, lo, avg, hi in CDC_CASES:
        chunker = CdcChunker(lo, avg, hi, seed)
        sizes = [len(c) for c in chunker.cut(xof(label, n))]
        out.append(
            {
                "seed": str(seed),
                "min": lo,
                "avg": avg,
                "max": hi,
                "input": {"xof": label, "length": n},
                "chunk_lengths": sizes,
            }
        )
    return out


def sealed_vector() -> dict[str, Any]:
    key = xof("strongroom known answers: sealing key", 32)
    plaintext = b"a sealed object of strongroom"
    ad = b"point"
    sealed = FixedNonces(key, "sealed").seal(plaintext, ad)
    return {"key": key.hex(), "associated_data": ad.hex(), "plaintext": plaintext.hex(),
            "sealed": bytes(sealed).hex()}  # fmt: skip


def stored_chunk_vectors() -> list[dict[str, Any]]:
    """A data chunk stored raw (flag 0) and one stored compressed (flag 1)."""
    m = master()
    sealer = FixedNonces(m.encryption_key, "chunk")
    hasher = ChunkHasher(m.id_key)
    out = []
    for data, compress in ((b"tiny", False), (b"compressible " * 100, True)):
        payload = Compressor(1 if compress else 0).pack(data)
        chunk_id = hasher(data)
        stored = sealer.seal(payload, blob_ad(chunk_id, BlobType.DATA))
        out.append({"id": chunk_id.hex(), "blob_type": 0, "plaintext": data.hex(),
                    "flag": payload[0], "stored": bytes(stored).hex()})  # fmt: skip
    return out


def tree_nodes() -> list[Node]:
    """Every node type and every optional key of §10, in a shuffled order."""
    c1, c2 = xof("tree chunk 1", 32), xof("tree chunk 2", 32)
    return [
        Node(b"sub", "d", 0o2755, 0, 0, "root", "root", 1_700_000_000_000_000_001,
             1_700_000_000_000_000_002, 1_700_000_000_000_000_003, subtree=xof("subtree", 32)),
        Node(b"file.txt", "f", 0o4755, 1234, 5678, "ann", "staff", 1_700_000_000_123_456_789,
             1_700_000_001_000_000_000, 1_700_000_002_000_000_000, size=1_000_007, inode=42,
             device=2049, nlink=2, xattrs={b"user.a": b"1", b"trusted.b": bytes(range(8))},
             chunks=[c1, c2], chunk_sizes=[600_000, 400_007]),
        Node(b"caf\xe9", "l", 0o777, 0, 0, mtime_ns=-1, atime_ns=0, ctime_ns=5,
             link_target=b"../target\xff"),
        Node(b"empty", "f", 0o600, 0, 0, mtime_ns=1, atime_ns=2, ctime_ns=3),
        Node(b"fifo", "p", 0o640, 1, 2, mtime_ns=10, atime_ns=11, ctime_ns=12),
        Node(b"null", "c", 0o666, 0, 0, mtime_ns=10, atime_ns=11, ctime_ns=12,
             rdev=(1 << 8) | 3),
        Node(b"sock", "s", 0o755, 0, 0, mtime_ns=10, atime_ns=11, ctime_ns=12),
    ]  # fmt: skip


def node_json(node: Node) -> dict[str, Any]:
    return {
        "name": node.name.hex(), "type": node.type, "mode": node.mode, "uid": node.uid,
        "gid": node.gid, "user": node.user, "group": node.group, "mtime_ns": node.mtime_ns,
        "atime_ns": node.atime_ns, "ctime_ns": node.ctime_ns, "size": node.size,
        "inode": node.inode, "device": node.device, "nlink": node.nlink, "rdev": node.rdev,
        "link_target": node.link_target.hex(),
        "xattrs": {k.hex(): v.hex() for k, v in node.xattrs.items()},
        "chunks": [c.hex() for c in node.chunks], "chunk_sizes": node.chunk_sizes,
        "subtree": node.subtree.hex() if node.subtree is not None else None,
    }  # fmt: skip


def node_from_json(doc: dict[str, Any]) -> Node:
    return Node(
        name=bytes.fromhex(doc["name"]), type=doc["type"], mode=doc["mode"], uid=doc["uid"],
        gid=doc["gid"], user=doc["user"], group=doc["group"], mtime_ns=doc["mtime_ns"],
        atime_ns=doc["atime_ns"], ctime_ns=doc["ctime_ns"], size=doc["size"],
        inode=doc["inode"], device=doc["device"], nlink=doc["nlink"], rdev=doc["rdev"],
        link_target=bytes.fromhex(doc["link_target"]),
        xattrs={bytes.fromhex(k): bytes.fromhex(v) for k, v in doc["xattrs"].items()},
        chunks=[bytes.fromhex(c) for c in doc["chunks"]], chunk_sizes=doc["chunk_sizes"],
        subtree=bytes.fromhex(doc["subtree"]) if doc["subtree"] is not None else None,
    )  # fmt: skip


def tree_vector() -> dict[str, Any]:
    nodes = tree_nodes()
    encoded = encode_tree(nodes)
    return {
        "nodes": [node_json(n) for n in nodes],
        "encoded": encoded.hex(),
        "id": ChunkHasher(master().id_key)(encoded).hex(),
    }


BLOCK_MAPS = [
    # size, block size, {block: id label}; blocks not named are holes
    (10 * MiB + 4096, MiB, {0: "b0", 1: "b1", 5: "b5", 10: "b10"}),
    (2 * 4096 * 4096 + 3 * 4096 + 100, 4096, {3: "s0", 4095: "s0 end", 8192: "s2", 8195: "s2 end"}),
]


def block_map_of(size: int, block_size: int, ids: dict[int, str]) -> BlockMap:
    block_map = BlockMap.empty(size, block_size)
    for block, label in ids.items():
        block_map.assign(block, xof(label, 32))
    return block_map


def block_map_vectors() -> list[dict[str, Any]]:
    hasher = ChunkHasher(master().id_key)
    out = []
    for size, block_size, ids in BLOCK_MAPS:
        block_map = block_map_of(size, block_size, ids)
        segments = list(block_map.segments())
        segment_ids = [None if s is None else hasher(s) for s in segments]
        root = block_map.encode_root(segment_ids)
        out.append(
            {
                "size": size,
                "block_size": block_size,
                "entries": {str(k): xof(v, 32).hex() for k, v in ids.items()},
                "segments_sha256": [
                    None if s is None else hashlib.sha256(s).hexdigest() for s in segments
                ],
                "segment_ids": [None if i is None else i.hex() for i in segment_ids],
                "root": root.hex(),
                "root_id": hasher(root).hex(),
            }
        )
    return out


def vm_manifest() -> VmManifest:
    return VmManifest(
        "golden",
        [
            VmDisk("disk1", 3 * MiB, MiB, xof("map 1", 32).hex(),
                   {"tracker": "full", "bitmap": "strongroom-x.1", "blocks": 3}),
            VmDisk("disk0", 2 * MiB, 65536, xof("map 0", 32).hex(), {}),
        ],
    )  # fmt: skip


def vm_manifest_vector() -> dict[str, Any]:
    encoded = vm_manifest().encode()
    return {"encoded": encoded.hex(), "id": ChunkHasher(master().id_key)(encoded).hex()}


CONFIG = RepoConfig(id="9f7b8c13e7a24f18892cf33f471dca12", created="2026-01-01T00:00:00Z")


def config_vector() -> dict[str, Any]:
    text = CONFIG.encode()
    sealed = FixedNonces(master().encryption_key, "config").seal(text, b"config")
    return {"text": text.decode(), "sealed": bytes(sealed).hex()}


POINT_DOC: dict[str, Any] = {
    "version": 1,
    "kind": "files",
    "time": "2026-01-01T12:00:00.250000+00:00",
    "host": "golden",
    "user": "root",
    "paths": ["/srv/data"],
    "tree": xof("point tree", 32).hex(),
    "parent": xof("point parent", 32).hex(),
    "tags": ["daily"],
    "consistency": "crash-consistent",
    "program": "strongroom 0.1.0",
    "summary": {"files_new": 1, "total_bytes": 12},
}


def point_vector() -> dict[str, Any]:
    text = json.dumps(RecoveryPoint.from_doc(POINT_DOC).to_doc(), sort_keys=True).encode()
    sealed = FixedNonces(master().encryption_key, "point").seal(text, b"point")
    return {"doc": POINT_DOC, "text": text.decode(), "sealed": bytes(sealed).hex(),
            "id": content_hash(sealed).hex()}  # fmt: skip


def index_entries() -> dict[bytes, list[tuple[bytes, int, int, int, int]]]:
    return {
        xof("pack a", 32): [
            (xof("chunk 1", 32), 8, 100, 72, 0),
            (xof("chunk 2", 32), 108, 60, 40, 0),
        ],
        xof("pack b", 32): [(xof("tree 1", 32), 8, 200, 300, 1)],
    }


def index_vector() -> dict[str, Any]:
    index = IndexFile.build(index_entries(), supersedes=[xof("old index", 32)])
    plain = index.encode()
    sealed = FixedNonces(master().encryption_key, "index").seal(plain, b"index")
    return {
        "supersedes": [xof("old index", 32).hex()],
        "packs": {
            pack.hex(): [[c.hex(), off, length, raw, t] for c, off, length, raw, t in rows]
            for pack, rows in index_entries().items()
        },
        "encoded": plain.hex(),
        "sealed": bytes(sealed).hex(),
        "name": "index/" + content_hash(sealed).hex(),
    }


PACK_CHUNKS = [b"first chunk of the pack", b"second chunk " * 20]


def build_pack() -> tuple[bytes, bytes]:
    """(pack id, pack bytes) of PACK_CHUNKS as data chunks, level 1."""
    m = master()
    sealer = FixedNonces(m.encryption_key, "pack")
    hasher = ChunkHasher(m.id_key)
    builder = PackBuilder(BlobType.DATA)
    for data in PACK_CHUNKS:
        chunk_id = hasher(data)
        payload = Compressor(0).pack(data)  # raw: the pack's bytes then depend on no zstd
        builder.add(chunk_id, sealer.seal(payload, blob_ad(chunk_id, BlobType.DATA)), len(data))
    pack_id, parts = builder.finish(sealer)
    return pack_id, b"".join(parts)


def pack_vector() -> dict[str, Any]:
    pack_id, pack = build_pack()
    return {
        "chunks": [c.hex() for c in PACK_CHUNKS],
        "pack": pack.hex(),
        "name": f"data/{pack_id.hex()[:2]}/{pack_id.hex()}",
    }


def build() -> dict[str, Any]:
    return {
        "about": (
            "Known answers of strongroom repository format 1 (docs/format.md). Byte strings "
            "are lowercase hex; xof(label, n) = the first n bytes of the unkeyed BLAKE3 XOF of "
            "the ASCII label. Keys of every section but 'kdf', 'key_file' and 'sealed' derive "
            "from derived.master_secret (format.md §5). Made by tests/format/vectors.py."
        ),
        "format_version": 1,
        "kdf": kdf_vector(),
        "key_file": key_file_vector(),
        "derived": derived_vector(),
        "chunk_ids": chunk_id_vectors(),
        "cdc": cdc_vectors(),
        "sealed": sealed_vector(),
        "stored_chunks": stored_chunk_vectors(),
        "tree": tree_vector(),
        "block_maps": block_map_vectors(),
        "vm_manifest": vm_manifest_vector(),
        "config": config_vector(),
        "point": point_vector(),
        "index_file": index_vector(),
        "pack": pack_vector(),
    }


def main() -> None:
    if KAT_PATH.exists() and "--force" not in sys.argv:
        raise SystemExit(f"{KAT_PATH} exists: known answers are made once per format version")
    KAT_PATH.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {KAT_PATH}")


if __name__ == "__main__":
    main()
