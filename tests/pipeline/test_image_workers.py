"""The image pipeline on several workers with its writer thread: the map does
not depend on the worker count, a failing pack write stops the backup, and a
backup killed while packs are being written leaves a repository that
`check --read-data` passes and the next backup completes exactly."""

from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from strongroom.errors import StrongroomError
from strongroom.pipeline.chunk_writer import ChunkWriter
from strongroom.pipeline.image_backup import ImageBackup, is_zero
from strongroom.repository.repo import Repository
from strongroom.sources.block import RawSource
from strongroom.storage.local import LocalBackend
from strongroom.trackers.changes import ChangeSet
from tests.conftest import CliRunner, init_local_repository, open_local_repository
from tests.helpers.block_servers import Background
from tests.helpers.images import (
    backup,
    check_repository,
    list_points,
    needs,
    restore_and_compare,
)

KiB, MiB = 1024, 1024 * 1024
BLOCK = 64 * KiB


def _mixed_disk(path: Path, blocks: int, seed: int) -> Path:
    """Random, text-like, all-zero and repeated blocks, with a hole at the end."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(300)]
    seen: list[bytes] = []
    with open(path, "wb") as f:
        for i in range(blocks):
            kind = i % 5
            if kind == 0:
                block = rng.randbytes(BLOCK)
            elif kind == 1:
                block = b" ".join(rng.choice(words) for _ in range(BLOCK // 4))[:BLOCK]
            elif kind == 2:
                block = bytes(BLOCK)
            else:
                block = rng.choice(seen) if seen and kind == 3 else rng.randbytes(BLOCK)
            seen.append(block)
            f.write(block)
        f.truncate(f.tell() + 3 * BLOCK + 4 * KiB)  # a hole and a short last block
    return path


def _run(repo: Repository, disk: Path, workers: int) -> ImageBackup:
    source = RawSource(str(disk))
    try:
        pipeline = ImageBackup(
            repo, source, BLOCK, None, ChangeSet("full", None, ""), workers=workers
        )
        pipeline.run()
    finally:
        source.close()
    return pipeline


def test_the_map_and_what_is_stored_do_not_depend_on_the_workers(tmp_path: Path) -> None:
    disk = _mixed_disk(tmp_path / "disk.raw", 120, seed=1)
    first = tmp_path / "one"
    init_local_repository(first)
    shutil.copytree(first, tmp_path / "four")  # the same keys: the same chunk ids
    results = {}
    for name, workers in (("one", 1), ("four", 4)):
        repo = open_local_repository(tmp_path / name)
        try:
            pipeline = _run(repo, disk, workers)
            stored = {cid for cid, _ in repo.index.iter_chunks()}
        finally:
            repo.close()
        results[name] = (pipeline.summary, stored)
    one, four = results["one"][0], results["four"][0]
    assert one.map_root == four.map_root != ""
    assert one.as_dict() == four.as_dict()
    data = disk.read_bytes()
    blocks = [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]
    assert one.blocks_new == len({b for b in blocks if b.strip(b"\0")})  # repeats stored once
    assert one.holes == sum(1 for b in blocks if not b.strip(b"\0"))
    assert results["one"][1] == results["four"][1]


def test_is_zero_reads_any_buffer_in_place() -> None:
    zeros = bytearray(MiB + 3)
    assert is_zero(zeros) and is_zero(memoryview(zeros)[5:]) and is_zero(b"")
    zeros[MiB + 1] = 1
    assert not is_zero(zeros) and not is_zero(memoryview(zeros))
    assert is_zero(memoryview(zeros)[:MiB])


class _Failing:
    def add_sealed(self, *args: object) -> bool:
        raise OSError("disk full")


def test_the_writer_hands_its_error_to_the_reader_and_never_hangs() -> None:
    writer = ChunkWriter(_Failing(), depth=1)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        for _ in range(10):  # the queue fills once the writer died: put must not block
            writer.put(bytes(32), b"sealed", 6)
    with pytest.raises(OSError, match="disk full"):
        writer.drain()
    writer.close()


class _FullDisk(Repository):
    def add_sealed(self, *args: object, **kwargs: object) -> bool:  # type: ignore[override]
        raise StrongroomError("no space left on the device")


def test_a_failing_pack_write_stops_the_backup(tmp_path: Path, repo_path: Path) -> None:
    disk = _mixed_disk(tmp_path / "disk.raw", 200, seed=2)
    init_local_repository(repo_path)
    plain = open_local_repository(repo_path)
    repo = _FullDisk(LocalBackend(repo_path), plain.master, plain.config, plain.key_name)
    with pytest.raises(StrongroomError, match="no space"):
        _run(repo, disk, workers=2)
    assert repo.stats.chunks_added == 0


@needs("qemu-img")
def test_sigkill_while_packs_are_written_then_check_read_data_and_back_up_again(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, cli_env: dict[str, str]
) -> None:
    disk = tmp_path / "disk.raw"
    rng = random.Random(3)
    line = b"line %d of a log, value %x\n"
    text = b"".join(line % (n, rng.getrandbits(40)) for n in range(80_000))[: 2 * MiB]
    with open(disk, "wb") as f:
        for i in range(48):  # 96 MiB, no two blocks alike: half compressible, half random
            f.write(b"%08d" % i + text[8:] if i % 2 else rng.randbytes(2 * MiB))
    job = Background(cli_env, "backup", "--image", str(disk), "--json")
    try:
        packs = initialized_repo / "data"
        while not any(packs.rglob("*")) or not list(packs.rglob("?" * 64)):
            assert job.proc.poll() is None, "the backup ended before its first pack"
            time.sleep(0.002)
        job.signal(signal.SIGKILL)  # one pack written, the next one streaming
        job.wait()
    finally:
        job.kill()
    assert list_points(cli) == []
    check_repository(cli, read_data=True)

    s = backup(cli, disk)
    assert s["parent"] is None and s["bytes_read"] == 96 * MiB
    restore_and_compare(cli, s["point_id"], disk, tmp_path)  # qemu-img compare
    check_repository(cli, read_data=False)
