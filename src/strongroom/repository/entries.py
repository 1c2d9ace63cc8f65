"""Index entries as typed tuples: what index files, packs, check, prune and
repair pass between them (kept apart from index.py, which loads numpy)."""

from __future__ import annotations

from typing import NamedTuple

from strongroom.repository.format import BlobType


class PackedChunk(NamedTuple):
    """One chunk as an index lists it within its pack (the pack is the key of
    the mapping that holds these)."""

    chunk_id: bytes
    offset: int  # in the pack
    length: int  # sealed length in the pack
    raw: int  # plaintext length
    type: int  # BlobType value


class IndexEntry(NamedTuple):
    """One entry of an index file: a chunk and where it lies."""

    chunk_id: bytes
    pack: bytes
    offset: int
    length: int
    raw: int
    type: BlobType
