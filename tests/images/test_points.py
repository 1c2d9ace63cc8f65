"""Image points among the others: listed with what they hold, checked, and
pruned by their block maps (a forgotten point's own blocks go, shared ones stay)."""

from __future__ import annotations

import shutil
from pathlib import Path

from strongroom.pipeline.blockmaps import load_block_map
from strongroom.repository.format import BlobType
from strongroom.repository.pack import read_pack_header
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.images import (
    BS,
    MiB,
    backup,
    check_repository,
    list_points,
    restore_and_compare,
    write_random,
)


def chunk_ids(repo_path: Path, tree: str) -> set[bytes]:
    repo = open_local_repository(repo_path)
    try:
        block_map = load_block_map(repo, bytes.fromhex(tree))
    finally:
        repo.close()
    return {block_map.get(i) for i in range(block_map.blocks)} - {None}  # type: ignore[misc]


def present(repo_path: Path, ids: set[bytes]) -> set[bytes]:
    repo = open_local_repository(repo_path)
    try:
        return {c for c in ids if repo.has_chunk(c)}
    finally:
        repo.close()


def test_list_check_forget_and_prune(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "disk.raw"
    write_random(disk, 0, 8 * MiB, seed=1)
    first = backup(cli, disk, "--block-size", str(BS), "--tag", "img")
    v1 = shutil.copy(disk, tmp_path / "v1.raw")
    write_random(disk, 2 * MiB, 1 * MiB, seed=2)
    second = backup(cli, disk)

    a, b = list_points(cli)
    assert (a["id"], b["id"]) == (first["point_id"], second["point_id"])
    for p in (a, b):
        assert p["kind"] == "block" and p["paths"] == [str(disk)]
        assert p["summary"]["size"] == 8 * MiB and p["summary"]["block_size"] == BS
    assert (a["summary"]["tracker"], b["summary"]["tracker"]) == ("full", "compare")
    assert (a["summary"]["bytes_changed"], b["summary"]["bytes_changed"]) == (8 * MiB, MiB)
    assert b["parent"] == a["id"] and a["tags"] == ["img"]
    table = cli("snapshots")
    assert table.rc == 0 and "block" in table.out and "compare" in table.out
    check_repository(cli)

    only_first = chunk_ids(initialized_repo, a["tree"]) - chunk_ids(initialized_repo, b["tree"])
    assert len(only_first) == 16
    result = cli("forget", a["id"], "--prune")
    assert result.rc == 0, result.err

    assert [p["id"] for p in list_points(cli)] == [b["id"]]
    assert present(initialized_repo, only_first) == set()  # the forgotten blocks are gone
    restore_and_compare(cli, b["id"], disk, tmp_path)  # ... the shared ones are not
    check_repository(cli)
    assert v1.exists()


def test_damaged_parent_map_does_not_block_the_next_backup(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "disk.raw"
    write_random(disk, 0, 4 * MiB, seed=3)
    first = backup(cli, disk, "--block-size", str(BS))
    repo = open_local_repository(initialized_repo)
    try:
        trees = [
            (pack, e)
            for pack in sorted((initialized_repo / "data").glob("*/*"))
            for e in read_pack_header(pack.read_bytes(), repo.sealer, pack.name)
            if e.type == BlobType.TREE
        ]
    finally:
        repo.close()
    for pack, entry in trees:  # the map's root and segment
        raw = bytearray(pack.read_bytes())
        raw[entry.offset + entry.length // 2] ^= 0x01
        pack.write_bytes(bytes(raw))
    assert cli("check").rc == 1

    result = cli("backup", "--image", str(disk), "--json")

    assert result.rc == 0, result.err
    s = result.summary()
    assert s["point_id"] != first["point_id"] and s["bytes_read"] == 4 * MiB
    # a warning (a JSON line with --json) names the damaged parent
    assert first["point_id"][:8] in result.out + result.err
    restore_and_compare(cli, s["point_id"], disk, tmp_path)
