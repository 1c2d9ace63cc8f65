"""Raw image files: holes are neither read nor stored nor written back; an
incremental backup by comparison stores only the blocks that changed; a file
that grows or shrinks restores at each size."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.images import (
    BS,
    QEMU,
    KiB,
    MiB,
    allocated,
    assert_same_image,
    backup,
    restore,
    restore_and_compare,
    sparse_file,
    touched,
    write_random,
)

pytestmark = QEMU

SIZE = 32 * MiB
ISLANDS = [(0, 256 * KiB), (5 * MiB + 123, 300 * KiB), (20 * MiB, MiB), (SIZE - 64 * KiB, 64 * KiB)]
# Deliberately unaligned: one change in data, one in a hole, one across two blocks.
CHANGES = [(64 * KiB + 5, 1000), (12 * MiB + 3, 8 * KiB), (20 * MiB + 60 * KiB, 8 * KiB)]


def sparse_image(path: Path) -> Path:
    sparse_file(path, SIZE)
    for i, (offset, length) in enumerate(ISLANDS):
        write_random(path, offset, length, seed=i)
    return path


def test_full_backup_reads_and_stores_only_data_and_restores_sparse(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = sparse_image(tmp_path / "disk.raw")
    data_blocks = touched(ISLANDS)

    s = backup(cli, src, "--block-size", str(BS))

    assert s["tracker"] == "full" and s["parent"] is None
    assert (s["size"], s["block_size"], s["blocks"]) == (SIZE, BS, SIZE // BS)
    # Holes are not read: only the blocks that hold data.
    assert s["bytes_read"] == len(data_blocks) * BS < SIZE
    assert s["blocks_read"] == len(data_blocks)
    # ... nor stored: one new chunk per data block, the rest are holes.
    assert s["blocks_new"] == len(data_blocks)
    assert s["holes"] == SIZE // BS - len(data_blocks)
    assert len(data_blocks) * BS <= s["data_added"] < len(data_blocks) * BS + 64 * KiB

    restored = restore_and_compare(cli, s["point_id"], src, tmp_path)
    assert restored.read_bytes() == src.read_bytes()
    # Holes come back as holes: the restored file allocates about what the source does
    # (a data block is written whole, so up to one block more per island).
    assert allocated(src) <= allocated(restored) <= allocated(src) + len(ISLANDS) * 2 * BS


def test_incremental_by_comparison_stores_the_touched_blocks(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = sparse_image(tmp_path / "disk.raw")
    first = backup(cli, src, "--block-size", str(BS))
    v1 = shutil.copy(src, tmp_path / "v1.raw")
    for i, (offset, length) in enumerate(CHANGES):
        write_random(src, offset, length, seed=100 + i)
    changed = touched(CHANGES)
    assert len(changed) == 4

    s = backup(cli, src)

    # A raw file carries no change record: every data block is compared with the parent.
    assert s["tracker"] == "compare" and s["parent"] == first["point_id"]
    assert s["block_size"] == BS  # the parent's block size, without the option
    assert s["blocks_changed"] == len(changed)
    assert s["bytes_changed"] == len(changed) * BS
    assert s["blocks_new"] == len(changed)
    assert len(changed) * BS <= s["data_added"] < len(changed) * BS + 64 * KiB
    assert s["bytes_read"] == len(touched(ISLANDS) | changed) * BS

    restore_and_compare(cli, s["point_id"], src, tmp_path)
    restore_and_compare(cli, first["point_id"], v1, tmp_path)


def test_unchanged_raw_file_adds_nothing(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = sparse_image(tmp_path / "disk.raw")
    backup(cli, src, "--block-size", str(BS))
    s = backup(cli, src)
    assert s["blocks_changed"] == s["blocks_new"] == 0
    assert s["data_added"] == 0  # the map's segments are the parent's too


def test_raw_file_that_grows_and_shrinks(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = sparse_file(tmp_path / "disk.raw", 16 * MiB)
    write_random(src, 0, 3 * MiB, seed=1)
    write_random(src, 16 * MiB - 100 * KiB, 100 * KiB, seed=2)
    versions: list[tuple[str, Path, int]] = []

    def take(size: int) -> None:
        s = backup(cli, src, "--block-size", str(BS))
        assert s["size"] == size
        copy = Path(shutil.copy(src, tmp_path / f"v{len(versions)}.raw"))
        versions.append((s["point_id"], copy, size))

    take(16 * MiB)
    # Grow to an unaligned size, with data in the new tail and across the old end.
    with open(src, "r+b") as f:
        f.truncate(24 * MiB + 12345)
    write_random(src, 16 * MiB - 10 * KiB, 20 * KiB, seed=3)
    write_random(src, 24 * MiB, 12345, seed=4)
    take(24 * MiB + 12345)
    # Shrink into the middle of a block that held data.
    with open(src, "r+b") as f:
        f.truncate(2 * MiB + 777)
    take(2 * MiB + 777)
    # Grow again: the tail beyond the old end reads zeros, not the old data.
    with open(src, "r+b") as f:
        f.truncate(4 * MiB)
    take(4 * MiB)

    for point, copy, size in versions:
        target = tmp_path / f"restored-{point[:8]}.raw"
        restore(cli, point, target)
        assert target.stat().st_size == size
        assert target.read_bytes() == copy.read_bytes()
        assert_same_image(copy, target)
