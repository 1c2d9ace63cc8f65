"""The index files as one table, and writing or removing them in batches.

Prune, repair and check each read every index file into {pack: entries} and
(prune, repair) write a new index and delete the old one: one implementation
of each, so a fix to one (the duplicate rule, the batch size) reaches all.
"""

from __future__ import annotations

from collections.abc import Iterable

from strongroom.errors import ObjectNotFound
from strongroom.repository.entries import PackedChunk
from strongroom.repository.index import IndexFile
from strongroom.repository.repo import Repository

INDEX_FILE_ENTRIES = 200_000  # per written index file: bounded memory for readers


def entries_by_pack(files: Iterable[IndexFile]) -> dict[bytes, list[PackedChunk]]:
    """Every entry by pack. The same (pack, chunk, offset) named by two files
    (old and new index after an interrupted prune or repair) counts once."""
    packs: dict[bytes, list[PackedChunk]] = {}
    seen: set[tuple[bytes, bytes, int]] = set()
    for idx in files:
        for cid, pack, off, length, raw, btype in idx.iter_entries():
            if (pack, cid, off) in seen:
                continue
            seen.add((pack, cid, off))
            packs.setdefault(pack, []).append(PackedChunk(cid, off, length, raw, int(btype)))
    return packs


def write_index_files(repo: Repository, packs: dict[bytes, list[PackedChunk]]) -> int:
    """Index files for `packs`, about INDEX_FILE_ENTRIES entries each; returns how many."""
    batch: dict[bytes, list[PackedChunk]] = {}
    count = files = 0
    for pack, entries in packs.items():
        batch[pack] = entries
        count += len(entries)
        if count >= INDEX_FILE_ENTRIES:
            repo.write_index_file(batch)
            files += 1
            batch, count = {}, 0
    if batch:
        repo.write_index_file(batch)
        files += 1
    return files


def delete_object(repo: Repository, name: str) -> None:
    """Delete `name`; already gone is fine (an interrupted run got there first)."""
    try:
        repo.backend.delete(name)
    except ObjectNotFound:
        pass
