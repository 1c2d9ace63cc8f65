"""The chunk index: chunk id -> (pack, offset, length), compact in memory.

Index files (object `index/<hex>`) are sealed with AD = b"index"; plaintext:

    magic "SRINDX01" | u32 n_supersedes | n_supersedes x 32-byte index ids
    | u32 n_packs | n_packs x 32-byte pack ids
    | u32 n_entries | n_entries x ENTRY

ENTRY (49 bytes): chunk id 32 | pack number u32 (into this file's pack list) |
offset u32 | stored length u32 | raw length u32 | type u8.

In memory the index is a few sorted numpy columns (44 bytes per chunk: the id,
a pack number, offset and length) plus a small dict of recent additions that
is merged in bulk, so a repository of a million chunks costs about 44 MB.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from strongroom.errors import IntegrityError
from strongroom.repository.entries import IndexEntry, PackedChunk
from strongroom.repository.format import BlobType

MAGIC = b"SRINDX01"
ENTRY_DTYPE = np.dtype(
    [
        ("id", "V32"),
        ("pack", "<u4"),
        ("offset", "<u4"),
        ("length", "<u4"),
        ("raw", "<u4"),
        ("type", "u1"),
    ]
)
assert ENTRY_DTYPE.itemsize == 49
_U32 = struct.Struct("<I")
_MERGE_THRESHOLD = 50_000


@dataclass(frozen=True, slots=True)
class Location:
    pack: bytes  # pack id
    offset: int
    length: int


@dataclass
class IndexFile:
    """One index file's content, decoded."""

    packs: list[bytes]
    entries: npt.NDArray[np.void]
    supersedes: list[bytes]

    def encode(self) -> bytes:
        parts = [MAGIC, _U32.pack(len(self.supersedes)), *self.supersedes]
        parts += [_U32.pack(len(self.packs)), *self.packs]
        parts += [_U32.pack(len(self.entries)), self.entries.tobytes()]
        return b"".join(parts)

    @classmethod
    def decode(cls, plain: bytes, what: str) -> IndexFile:
        view = memoryview(plain)
        if view[:8] != MAGIC:
            raise IntegrityError(f"{what} is not an index file")
        pos = 8
        try:
            supersedes, pos = _read_ids(view, pos)
            packs, pos = _read_ids(view, pos)
            (count,) = _U32.unpack_from(view, pos)
            pos += 4
        except struct.error:
            raise IntegrityError(f"{what} is truncated") from None
        if len(view) - pos != count * ENTRY_DTYPE.itemsize:
            raise IntegrityError(f"{what} has a wrong entry count")
        entries = np.frombuffer(view, dtype=ENTRY_DTYPE, count=count, offset=pos)
        if count and int(entries["pack"].max()) >= len(packs):
            raise IntegrityError(f"{what} refers to a pack it does not list")
        if count and int(entries["type"].max()) > max(BlobType):
            raise IntegrityError(f"{what} holds an entry of an unknown chunk type")
        return cls(packs, entries, supersedes)

    @classmethod
    def build(
        cls,
        packs: dict[bytes, list[PackedChunk]],
        supersedes: Iterable[bytes] = (),
    ) -> IndexFile:
        """From {pack id: [(chunk id, offset, length, raw, type)]}."""
        pack_ids = list(packs)
        total = sum(len(v) for v in packs.values())
        entries = np.zeros(total, dtype=ENTRY_DTYPE)
        i = 0
        for number, pid in enumerate(pack_ids):
            for cid, off, length, raw, btype in packs[pid]:
                entries[i] = (cid, number, off, length, raw, btype)
                i += 1
        return cls(pack_ids, entries, list(supersedes))

    def iter_entries(self) -> Iterator[IndexEntry]:
        for e in self.entries:
            yield IndexEntry(
                bytes(e["id"]),
                self.packs[int(e["pack"])],
                int(e["offset"]),
                int(e["length"]),
                int(e["raw"]),
                BlobType(int(e["type"])),
            )


def _read_ids(view: memoryview, pos: int) -> tuple[list[bytes], int]:
    (n,) = _U32.unpack_from(view, pos)
    pos += 4
    end = pos + 32 * n
    if end > len(view):
        raise struct.error("ids run past the end")
    return [bytes(view[p : p + 32]) for p in range(pos, end, 32)], end


class ChunkIndex:
    """Lookup of chunk locations across all loaded index files. Thread-safe for readers.

    The bulk lives in sorted numpy columns keyed by the id's first 8 bytes;
    additions go to a dict until `_MERGE_THRESHOLD`, then merge in one sort.
    """

    def __init__(self) -> None:
        self._packs: list[bytes] = []
        self._pack_numbers: dict[bytes, int] = {}
        # (first 8 id bytes as sorted keys, remaining 24 bytes, [pack number, offset, length]);
        # replaced as one tuple so a reader never mixes two generations.
        self._table: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[np.uint32]]
        self._table = (
            np.zeros(0, dtype=np.uint64),
            np.zeros((0, 24), dtype=np.uint8),
            np.zeros((0, 3), dtype=np.uint32),
        )
        self._recent: dict[bytes, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def _pack_number(self, pack: bytes) -> int:
        number = self._pack_numbers.get(pack)
        if number is None:
            number = len(self._packs)
            self._packs.append(pack)
            self._pack_numbers[pack] = number
        return number

    def __len__(self) -> int:
        return len(self._table[0]) + len(self._recent)

    @property
    def packs(self) -> list[bytes]:
        return list(self._packs)

    def memory_bytes(self) -> int:
        """Bytes held by the columns (the per-chunk cost; excludes the pack table)."""
        return sum(a.nbytes for a in self._table)

    def add(self, chunk_id: bytes, pack: bytes, offset: int, length: int) -> None:
        with self._lock:
            self._recent[bytes(chunk_id)] = (self._pack_number(pack), offset, length)
            if len(self._recent) >= _MERGE_THRESHOLD:
                self._merge_recent()

    def add_file(self, index: IndexFile) -> None:
        """Add every entry of a decoded index file in one bulk merge."""
        self.add_files([index])

    def add_files(self, files: list[IndexFile]) -> None:
        """Add many index files with a single sort (loading is O(n log n), not O(f n log n))."""
        files = [f for f in files if len(f.entries)]
        if not files:
            return
        with self._lock:
            all_ids, all_cols = [], []
            for index in files:
                numbers = np.array([self._pack_number(p) for p in index.packs], dtype=np.uint32)
                all_ids.append(
                    np.ascontiguousarray(index.entries["id"]).view(np.uint8).reshape(-1, 32)
                )
                cols = np.empty((len(index.entries), 3), dtype=np.uint32)
                cols[:, 0] = numbers[index.entries["pack"]]
                cols[:, 1] = index.entries["offset"]
                cols[:, 2] = index.entries["length"]
                all_cols.append(cols)
            self._merge(np.concatenate(all_ids), np.concatenate(all_cols))

    def _merge_recent(self) -> None:
        if not self._recent:
            return
        n = len(self._recent)
        ids = np.frombuffer(b"".join(self._recent), dtype=np.uint8).reshape(n, 32)
        cols = np.array(list(self._recent.values()), dtype=np.uint32).reshape(n, 3)
        self._merge(ids, cols)
        self._recent = {}

    def _merge(self, ids: npt.NDArray[np.uint8], cols: npt.NDArray[np.uint32]) -> None:
        key = np.ascontiguousarray(ids[:, :8]).view(">u8").reshape(-1).astype(np.uint64)
        old_key, old_rest, old_cols = self._table
        all_key = np.concatenate([old_key, key])
        all_rest = np.concatenate([old_rest, ids[:, 8:]])
        all_cols = np.concatenate([old_cols, cols])
        order = np.argsort(all_key, kind="stable")
        self._table = (all_key[order], all_rest[order], all_cols[order])

    def lookup(self, chunk_id: bytes) -> Location | None:
        recent = self._recent.get(chunk_id)
        if recent is not None:
            return Location(self._packs[recent[0]], recent[1], recent[2])
        key, rest, cols = self._table
        if not len(key):
            return None
        k = int.from_bytes(chunk_id[:8], "big")
        i = int(key.searchsorted(np.uint64(k)))  # a Python int would go through float64
        tail = chunk_id[8:]
        while i < len(key) and int(key[i]) == k:
            if rest[i].tobytes() == tail:
                c = cols[i]
                return Location(self._packs[int(c[0])], int(c[1]), int(c[2]))
            i += 1
        return None

    def lookup_all(self, chunk_id: bytes) -> list[Location]:
        """Every location the loaded index files give for the chunk (more than one
        when it was stored twice: by two concurrent backups, or again after its
        pack went missing), the most recently added first."""
        found = []
        recent = self._recent.get(chunk_id)
        if recent is not None:
            found.append(Location(self._packs[recent[0]], recent[1], recent[2]))
        key, rest, cols = self._table
        if len(key):
            k = int.from_bytes(chunk_id[:8], "big")
            i = int(key.searchsorted(np.uint64(k)))
            tail = chunk_id[8:]
            while i < len(key) and int(key[i]) == k:
                if rest[i].tobytes() == tail:
                    c = cols[i]
                    found.append(Location(self._packs[int(c[0])], int(c[1]), int(c[2])))
                i += 1
        return found

    def __contains__(self, chunk_id: bytes) -> bool:
        return self.lookup(chunk_id) is not None

    def iter_chunks(self) -> Iterator[tuple[bytes, Location]]:
        """Every (chunk id, location); for prune and check."""
        with self._lock:
            self._merge_recent()
            key, rest, cols = self._table
        ids = np.concatenate([key.astype(">u8").view(np.uint8).reshape(-1, 8), rest], axis=1)
        for i in range(len(key)):
            c = cols[i]
            yield ids[i].tobytes(), Location(self._packs[int(c[0])], int(c[1]), int(c[2]))
