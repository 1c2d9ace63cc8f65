"""Where an image point is restored: a qcow2 file, a writable NBD export (whose
old content must not show through the holes), a read-only one; and a point
with a damaged chunk, which restores everything else and names the block."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from strongroom.pipeline.blockmaps import load_block_map
from strongroom.repository.format import BlobType
from strongroom.repository.pack import read_pack_header
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.block_servers import QemuNbd
from tests.helpers.images import (
    BS,
    QEMU,
    KiB,
    MiB,
    assert_same_image,
    backup,
    image_info,
    restore,
    sparse_file,
    write_random,
)

pytestmark = QEMU


def sparse_disk(path: Path) -> Path:
    sparse_file(path, 24 * MiB)
    write_random(path, 0, 1 * MiB, seed=1)
    write_random(path, 7 * MiB + 100, 2 * MiB, seed=2)
    write_random(path, 24 * MiB - 64 * KiB, 64 * KiB, seed=3)
    return path


def test_restore_as_qcow2(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    disk = sparse_disk(tmp_path / "disk.raw")
    point = backup(cli, disk, "--block-size", str(BS))["point_id"]
    target = tmp_path / "restored.qcow2"

    restore(cli, point, target, "--format", "qcow2")

    info = image_info(target)
    assert info["format"] == "qcow2" and info["virtual-size"] == 24 * MiB
    assert info["actual-size"] < 6 * MiB  # holes stay unallocated
    assert_same_image(disk, target, "raw", "qcow2")


def test_restore_onto_an_nbd_export_zeroes_the_holes(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, qemu_nbd: Callable[..., QemuNbd]
) -> None:
    disk = sparse_disk(tmp_path / "disk.raw")
    point = backup(cli, disk, "--block-size", str(BS))["point_id"]
    garbage = tmp_path / "garbage.raw"
    write_random(garbage, 0, 24 * MiB, seed=99)  # what the target held before
    server = qemu_nbd(garbage, "raw")

    restore(cli, point, server.uri)
    server.stop()

    assert garbage.stat().st_size == 24 * MiB
    assert garbage.read_bytes() == disk.read_bytes()


def test_restore_onto_a_read_only_or_small_export_is_refused(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, qemu_nbd: Callable[..., QemuNbd]
) -> None:
    disk = sparse_disk(tmp_path / "disk.raw")
    point = backup(cli, disk, "--block-size", str(BS))["point_id"]
    keep = tmp_path / "keep.raw"
    write_random(keep, 0, 24 * MiB, seed=5)
    before = keep.read_bytes()
    small = tmp_path / "small.raw"
    write_random(small, 0, 16 * MiB, seed=6)

    read_only = qemu_nbd(keep, "raw", read_only=True)
    result = cli("restore", point, "--target", read_only.uri)
    assert result.rc == 2 and "read-only" in result.err, result.err
    too_small = qemu_nbd(small, "raw")
    result = cli("restore", point, "--target", too_small.uri)
    assert result.rc == 2 and str(24 * MiB) in result.err, result.err
    assert keep.read_bytes() == before


def test_damaged_chunk_is_named_and_the_rest_restores(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "disk.raw"
    write_random(disk, 0, 4 * MiB, seed=7)
    point = backup(cli, disk, "--block-size", str(BS))
    # Flip one byte inside one data chunk, found from the pack headers.
    repo = open_local_repository(initialized_repo)
    try:
        block_map = load_block_map(repo, bytes.fromhex(point_tree(cli, point["point_id"])))
        pack, entry = next(
            (pack, e)
            for pack in sorted((initialized_repo / "data").glob("*/*"))
            for e in read_pack_header(pack.read_bytes(), repo.sealer, pack.name)
            if e.type == BlobType.DATA
        )
    finally:
        repo.close()
    raw = bytearray(pack.read_bytes())
    raw[entry.offset + entry.length // 2] ^= 0x01
    pack.write_bytes(bytes(raw))
    damaged = [i for i in range(block_map.blocks) if block_map.get(i) == entry.chunk_id]
    assert len(damaged) == 1

    target = tmp_path / "restored.raw"
    result = cli("restore", point["point_id"], "--target", str(target))

    assert result.rc == 1
    assert "Traceback" not in result.err
    named = {int(n) for n in re.findall(r"block at offset (\d+)", result.out + result.err)}
    assert named == {damaged[0] * BS}
    original, restored = disk.read_bytes(), target.read_bytes()
    assert len(restored) == len(original)
    for i in range(block_map.blocks):
        got, want = restored[i * BS : (i + 1) * BS], original[i * BS : (i + 1) * BS]
        if i in damaged:
            assert got == bytes(BS)
        else:
            assert got == want, f"block {i} is wrong"


def point_tree(cli: CliRunner, point_id: str) -> str:
    (point,) = [p for p in cli("snapshots", "--json").json() if p["id"] == point_id]
    return str(point["tree"])
