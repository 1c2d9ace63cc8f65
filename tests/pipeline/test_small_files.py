"""Small-file batches: bounded by files and bytes, read on a worker, dups closed."""

from __future__ import annotations

import os
from pathlib import Path

from strongroom.model.tree import Node
from strongroom.pipeline.small_files import (
    BATCH_BYTES,
    BATCH_FILES,
    SmallFile,
    SmallFileBatch,
    read_small_file,
)
from strongroom.repository.repo import Repository


def _node(name: bytes, size: int) -> Node:
    return Node(name=name, type="file", size=size)


def test_a_batch_is_full_at_its_file_count(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        batch = SmallFileBatch()
        full = [batch.add(fd, b"f%d" % i, b"p", _node(b"f", 1)) for i in range(BATCH_FILES)]
        assert full == [False] * (BATCH_FILES - 1) + [True]
        assert len(batch.dups) == 1  # one dup per directory
    finally:
        os.close(fd)
        for dup in batch.dups:
            os.close(dup)


def test_a_batch_is_full_at_its_byte_count(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    batch = SmallFileBatch()
    try:
        assert not batch.add(fd, b"a", b"a", _node(b"a", BATCH_BYTES - 1))
        assert batch.add(fd, b"b", b"b", _node(b"b", 1))
    finally:
        os.close(fd)
        for dup in batch.dups:
            os.close(dup)


def test_the_job_reads_seals_and_closes_its_dups(tmp_path: Path, memory_repo: Repository) -> None:
    (tmp_path / "small").write_bytes(b"hello")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    batch = SmallFileBatch()
    batch.add(fd, b"small", b"small", _node(b"small", 5))
    batch.add(fd, b"gone", b"gone", _node(b"gone", 5))
    os.close(fd)
    results = batch.reader(memory_repo, 1 << 20, dry_run=False)()
    first, second = results
    assert isinstance(first, SmallFile) and first.size == 5
    ((cid, length, sealed),) = first.chunks
    assert cid == memory_repo.chunk_id(b"hello") and length == 5 and sealed is not None
    assert isinstance(second, FileNotFoundError)
    for dup in batch.dups:
        try:
            os.fstat(dup)
        except OSError:
            continue
        raise AssertionError("a directory dup stayed open")


def test_a_file_that_grew_past_the_limit_is_cut(tmp_path: Path, memory_repo: Repository) -> None:
    data = os.urandom(3 * memory_repo.config.cdc_max)
    (tmp_path / "grown").write_bytes(data)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = read_small_file(memory_repo, fd, b"grown", limit=1024, dry_run=True)
    finally:
        os.close(fd)
    assert isinstance(result, SmallFile)
    assert len(result.chunks) > 1
    assert all(sealed is None for _, _, sealed in result.chunks)  # dry run
    assert sum(length for _, length, _ in result.chunks) == len(data)
