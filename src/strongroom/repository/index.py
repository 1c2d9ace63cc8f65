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

A small repository (up to `_MERGE_THRESHOLD` chunks) is held in plain dicts
and never imports numpy: its import alone (~100 ms) was most of the fixed cost
of a short backup. The columns are built the first time the index grows past
the threshold, with the same lookup results.
"""

from __future__ import annotations

import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strongroom.errors import IntegrityError
from strongroom.repository.entries import IndexEntry, PackedChunk
from strongroom.repository.format import BlobType

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MAGIC = b"SRINDX01"
_ENTRY = struct.Struct("<32sIIIIB")
ENTRY_SIZE = _ENTRY.size
assert ENTRY_SIZE == 49
_U32 = struct.Struct("<I")
_MERGE_THRESHOLD = 50_000
# Index files up to this many entries are checked entry by entry in Python;
# larger ones with numpy (whose import costs more than checking a few thousand).
_PYTHON_CHECK_LIMIT = 20_000


def entry_dtype() -> np.dtype[np.void]:
    """The numpy record type of one ENTRY (imports numpy)."""
    import numpy as np

    return np.dtype(
        [
            ("id", "V32"),
            ("pack", "<u4"),
            ("offset", "<u4"),
            ("length", "<u4"),
            ("raw", "<u4"),
            ("type", "u1"),
        ]
    )


@dataclass(frozen=True, slots=True)
class Location:
    pack: bytes  # pack id
    offset: int
    length: int


class IndexFile:
    """One index file's content, decoded: the packs it names, the entries as their
    stored bytes (49 each), and the index files it supersedes."""

    def __init__(self, packs: list[bytes], raw: bytes, supersedes: list[bytes]) -> None:
        self.packs = packs
        self.raw = raw  # n x ENTRY, as stored
        self.supersedes = supersedes
        self._entries: npt.NDArray[np.void] | None = None

    def __len__(self) -> int:
        return len(self.raw) // ENTRY_SIZE

    @property
    def entries(self) -> npt.NDArray[np.void]:
        """The entries as a numpy record array (imports numpy; read-only view)."""
        if self._entries is None:
            import numpy as np

            self._entries = np.frombuffer(self.raw, dtype=entry_dtype())
        return self._entries

    @entries.setter
    def entries(self, value: npt.NDArray[np.void]) -> None:
        self._entries = value
        self.raw = value.tobytes()

    def records(self) -> Iterator[tuple[bytes, int, int, int, int, int]]:
        """(id, pack number, offset, length, raw length, type) per entry, in file order."""
        return _ENTRY.iter_unpack(self.raw)

    def encode(self) -> bytes:
        if self._entries is not None:
            self.raw = self._entries.tobytes()
        parts = [MAGIC, _U32.pack(len(self.supersedes)), *self.supersedes]
        parts += [_U32.pack(len(self.packs)), *self.packs]
        parts += [_U32.pack(len(self)), self.raw]
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
        if len(view) - pos != count * ENTRY_SIZE:
            raise IntegrityError(f"{what} has a wrong entry count")
        decoded = cls(packs, bytes(view[pos:]), supersedes)
        if count:
            top_pack, top_type = decoded._maxima()
            if top_pack >= len(packs):
                raise IntegrityError(f"{what} refers to a pack it does not list")
            if top_type > max(BlobType):
                raise IntegrityError(f"{what} holds an entry of an unknown chunk type")
        return decoded

    def _maxima(self) -> tuple[int, int]:
        """The largest pack number and type of any entry."""
        if len(self) <= _PYTHON_CHECK_LIMIT:
            top_pack = top_type = 0
            for _, pack, _, _, _, btype in self.records():
                top_pack = max(top_pack, pack)
                top_type = max(top_type, btype)
            return top_pack, top_type
        entries = self.entries
        return int(entries["pack"].max()), int(entries["type"].max())

    @classmethod
    def build(
        cls,
        packs: dict[bytes, list[PackedChunk]],
        supersedes: Iterable[bytes] = (),
    ) -> IndexFile:
        """From {pack id: [(chunk id, offset, length, raw, type)]}."""
        pack_ids = list(packs)
        pack_entry = _ENTRY.pack
        raw = b"".join(
            pack_entry(cid, number, off, length, rawlen, btype)
            for number, pid in enumerate(pack_ids)
            for cid, off, length, rawlen, btype in packs[pid]
        )
        return cls(pack_ids, raw, list(supersedes))

    def iter_entries(self) -> Iterator[IndexEntry]:
        packs = self.packs
        for cid, pack, offset, length, raw, btype in self.records():
            yield IndexEntry(cid, packs[pack], offset, length, raw, BlobType(btype))


def _read_ids(view: memoryview, pos: int) -> tuple[list[bytes], int]:
    (n,) = _U32.unpack_from(view, pos)
    pos += 4
    end = pos + 32 * n
    if end > len(view):
        raise struct.error("ids run past the end")
    return [bytes(view[p : p + 32]) for p in range(pos, end, 32)], end


class ChunkIndex:
    """Lookup of chunk locations across all loaded index files. Thread-safe for readers.

    Loaded entries live in plain dicts while there are at most `_MERGE_THRESHOLD`
    of them (`_small`, with any second location of an id in `_small_more`), and in
    sorted numpy columns keyed by the id's first 8 bytes beyond that (`_table`).
    Additions of this session go to a dict until `_MERGE_THRESHOLD`, then merge in
    one sort. A lookup tries the session's additions first, then the loaded entries
    (first loaded first).
    """

    def __init__(self) -> None:
        self._packs: list[bytes] = []
        self._pack_numbers: dict[bytes, int] = {}
        # (first 8 id bytes as sorted keys, remaining 24 bytes, [pack number, offset, length]);
        # replaced as one tuple so a reader never mixes two generations. None: not built.
        self._table: (
            tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[np.uint32]] | None
        ) = None
        self._small: dict[bytes, tuple[int, int, int]] = {}
        self._small_more: dict[bytes, list[tuple[int, int, int]]] = {}
        self._recent: dict[bytes, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def _pack_number(self, pack: bytes) -> int:
        number = self._pack_numbers.get(pack)
        if number is None:
            number = len(self._packs)
            self._packs.append(pack)
            self._pack_numbers[pack] = number
        return number

    def _loaded(self) -> int:
        table = self._table
        small = len(self._small) + sum(len(v) for v in self._small_more.values())
        return small + (0 if table is None else len(table[0]))

    def __len__(self) -> int:
        return self._loaded() + len(self._recent)

    @property
    def packs(self) -> list[bytes]:
        return list(self._packs)

    @property
    def columnar(self) -> bool:
        """True once the loaded entries are numpy columns (past the threshold)."""
        return self._table is not None

    def memory_bytes(self) -> int:
        """Bytes held by the loaded entries (the per-chunk cost; excludes the pack table)."""
        if self._table is not None:
            return sum(a.nbytes for a in self._table)
        size = sys.getsizeof(self._small) if self._small else 0
        for key, value in self._small.items():
            size += sys.getsizeof(key) + sys.getsizeof(value) + sum(map(sys.getsizeof, value))
        return size

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
        files = [f for f in files if len(f)]
        if not files:
            return
        with self._lock:
            incoming = sum(len(f) for f in files)
            if self._table is None and self._loaded() + incoming <= _MERGE_THRESHOLD:
                self._add_small(files)
                return
            import numpy as np

            all_ids, all_cols = [], []
            for index in files:
                numbers = np.array([self._pack_number(p) for p in index.packs], dtype=np.uint32)
                entries = index.entries
                all_ids.append(np.ascontiguousarray(entries["id"]).view(np.uint8).reshape(-1, 32))
                cols = np.empty((len(entries), 3), dtype=np.uint32)
                cols[:, 0] = numbers[entries["pack"]]
                cols[:, 1] = entries["offset"]
                cols[:, 2] = entries["length"]
                all_cols.append(cols)
            self._merge(np.concatenate(all_ids), np.concatenate(all_cols))

    def _add_small(self, files: list[IndexFile]) -> None:
        small, more = self._small, self._small_more
        for index in files:
            numbers = [self._pack_number(p) for p in index.packs]
            for cid, pack, offset, length, _, _ in index.records():
                location = (numbers[pack], offset, length)
                if cid in small:
                    more.setdefault(cid, []).append(location)
                else:
                    small[cid] = location

    def _small_columns(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]]:
        """The dict-held entries as (ids, columns), first loaded first per id."""
        import numpy as np

        pairs = list(self._small.items())
        pairs += [(cid, loc) for cid, locs in self._small_more.items() for loc in locs]
        n = len(pairs)
        ids = np.frombuffer(b"".join(cid for cid, _ in pairs), dtype=np.uint8).reshape(n, 32)
        cols = np.array([loc for _, loc in pairs], dtype=np.uint32).reshape(n, 3)
        return ids, cols

    def _merge_recent(self) -> None:
        if not self._recent:
            return
        import numpy as np

        n = len(self._recent)
        ids = np.frombuffer(b"".join(self._recent), dtype=np.uint8).reshape(n, 32)
        cols = np.array(list(self._recent.values()), dtype=np.uint32).reshape(n, 3)
        self._merge(ids, cols)
        self._recent = {}

    def _merge(self, ids: npt.NDArray[np.uint8], cols: npt.NDArray[np.uint32]) -> None:
        import numpy as np

        old = self._table
        if old is None:  # the first columns: the dict-held entries go in first
            small_ids, small_cols = self._small_columns()
            ids = np.concatenate([small_ids, ids])
            cols = np.concatenate([small_cols, cols])
            old = (
                np.zeros(0, dtype=np.uint64),
                np.zeros((0, 24), dtype=np.uint8),
                np.zeros((0, 3), dtype=np.uint32),
            )
        key = np.ascontiguousarray(ids[:, :8]).view(">u8").reshape(-1).astype(np.uint64)
        old_key, old_rest, old_cols = old
        all_key = np.concatenate([old_key, key])
        all_rest = np.concatenate([old_rest, ids[:, 8:]])
        all_cols = np.concatenate([old_cols, cols])
        order = np.argsort(all_key, kind="stable")
        self._table = (all_key[order], all_rest[order], all_cols[order])
        # Only now: a reader that found no columns and misses in the dicts looks
        # at the columns again, which already hold every entry the dicts held.
        self._small, self._small_more = {}, {}

    def _location(self, entry: tuple[int, int, int]) -> Location:
        return Location(self._packs[entry[0]], entry[1], entry[2])

    def lookup(self, chunk_id: bytes) -> Location | None:
        recent = self._recent.get(chunk_id)
        if recent is not None:
            return self._location(recent)
        table = self._table
        if table is None:
            small = self._small.get(chunk_id)
            if small is not None:
                return self._location(small)
            table = self._table  # the dicts may have moved into columns meanwhile
            if table is None:
                return None
        for location in self._table_locations(table, chunk_id):
            return location
        return None

    def _table_locations(
        self,
        table: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[np.uint32]],
        chunk_id: bytes,
    ) -> Iterator[Location]:
        import numpy as np

        key, rest, cols = table
        if not len(key):
            return
        k = int.from_bytes(chunk_id[:8], "big")
        i = int(key.searchsorted(np.uint64(k)))  # a Python int would go through float64
        tail = chunk_id[8:]
        while i < len(key) and int(key[i]) == k:
            if rest[i].tobytes() == tail:
                c = cols[i]
                yield Location(self._packs[int(c[0])], int(c[1]), int(c[2]))
            i += 1

    def lookup_all(self, chunk_id: bytes) -> list[Location]:
        """Every location the loaded index files give for the chunk (more than one
        when it was stored twice: by two concurrent backups, or again after its
        pack went missing): this session's first, then the loaded ones in the
        order their files were loaded."""
        found = []
        recent = self._recent.get(chunk_id)
        if recent is not None:
            found.append(self._location(recent))
        if self._table is None:
            small = self._small.get(chunk_id)
            if small is not None:
                found.append(self._location(small))
                found += [self._location(e) for e in self._small_more.get(chunk_id, ())]
                return found
        table = self._table  # None, or the columns (built meanwhile, perhaps)
        if table is not None:
            found += self._table_locations(table, chunk_id)
        return found

    def __contains__(self, chunk_id: bytes) -> bool:
        return self.lookup(chunk_id) is not None

    def iter_chunks(self) -> Iterator[tuple[bytes, Location]]:
        """Every (chunk id, location), ordered by id; for prune and check."""
        with self._lock:
            if self._table is None:
                entries = list(self._small.items())
                entries += [(c, e) for c, more in self._small_more.items() for e in more]
                entries += self._recent.items()
                entries.sort(key=lambda item: item[0][:8])  # stable: as the columns order them
                snapshot = [(cid, self._location(e)) for cid, e in entries]
            else:
                self._merge_recent()
        if self._table is None:
            yield from snapshot
            return
        import numpy as np

        key, rest, cols = self._table
        ids = np.concatenate([key.astype(">u8").view(np.uint8).reshape(-1, 8), rest], axis=1)
        for i in range(len(key)):
            c = cols[i]
            yield ids[i].tobytes(), Location(self._packs[int(c[0])], int(c[1]), int(c[2]))
