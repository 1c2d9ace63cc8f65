"""A lost pack, end to end: check names it, prune says what to do, backup stores
again what it still has, and `repair index` / `repair points` heal the repository."""

from __future__ import annotations

import os
from pathlib import Path

from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import FILE
from strongroom.repository import format as fmt
from strongroom.repository.index_files import entries_by_pack, write_index_files
from strongroom.services.walk import iter_tree
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import assert_one_line_error
from tests.helpers.locks import write_lock
from tests.helpers.tree import random_bytes, write_file


def pack_of(repo_path: Path, point_id: str, file_name: str) -> Path:
    """The pack file holding the first chunk of `file_name` in the point."""
    repo = open_local_repository(repo_path)
    try:
        point = RecoveryPoint.from_doc(repo.load_point(point_id))
        for path, node in iter_tree(repo, bytes.fromhex(point.tree)):
            if node.type == FILE and path.endswith(b"/" + file_name.encode()):
                pack = repo.locate(node.chunks[0]).pack
                return repo_path / fmt.pack_name(pack.hex())
    finally:
        repo.close()
    raise AssertionError(f"{file_name} not in point {point_id}")


def backup(cli: CliRunner, *args: str) -> str:
    result = cli("backup", *args, "--json")
    assert result.rc == 0, result.err
    return str(result.summary()["point_id"])


def restore_equal(cli: CliRunner, point: str, target: Path, src: Path) -> None:
    result = cli("restore", point, "--target", str(target))
    assert result.rc == 0, result.err
    restored = target / str(src).lstrip("/")
    for f in src.iterdir():
        assert (restored / f.name).read_bytes() == f.read_bytes(), f.name


def make_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_file(src / "keep.bin", random_bytes(200_000, 1))
    return src


def test_backup_force_stores_again_what_a_lost_pack_held(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = make_src(tmp_path)
    write_file(src / "later.bin", random_bytes(300_000, 2))
    first = backup(cli, str(src))
    pack_of(initialized_repo, first, "later.bin").unlink()

    # The bug: this stored nothing new (the index still named the lost pack),
    # and its point could not be restored.
    again = cli("backup", str(src), "--force", "--json")
    assert again.rc == 0, again.err
    assert again.summary()["chunks_new"] >= 1
    restore_equal(cli, again.summary()["point_id"], tmp_path / "r1", src)

    check = cli("check")
    assert check.rc == 1
    assert "missing from storage" in check.err and "repair index" in check.err
    fixed = cli("repair", "index", "--json")
    assert fixed.rc == 0, fixed.err
    assert len(fixed.json()["packs_missing"]) == 1
    assert cli("check", "--read-data").rc == 0  # every point whole again
    assert cli("prune").rc == 0
    restore_equal(cli, first, tmp_path / "r2", src)


def test_lost_pack_prune_refusal_and_repair_points(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = make_src(tmp_path)
    backup(cli, str(src))
    write_file(src / "lost.bin", random_bytes(300_000, 3))
    damaged = backup(cli, str(src))
    pack_of(initialized_repo, damaged, "lost.bin").unlink()

    check = cli("check", "--json")
    assert check.rc == 1
    assert any(p.endswith("/lost.bin") for p in check.json()["damaged_files"][damaged])
    assert not any("keep.bin" in p for p in check.json()["damaged_files"][damaged])

    prune = cli("prune")
    assert prune.rc == 1
    assert_one_line_error(prune, "in packs that are missing", "strongroom repair index")
    assert "missing from the index" not in prune.err

    assert cli("repair", "index").rc == 0
    dry = cli("repair", "points", "--dry-run", "--json")
    assert dry.rc == 0, dry.err
    (entry,) = dry.json()["points"]
    assert entry["point"] == damaged and entry["repaired"] is None
    assert [p.rsplit("/", 1)[-1] for p in entry["damaged"]] == ["lost.bin"]

    fixed = cli("repair", "points", "--forget", "--json")
    assert fixed.rc == 0, fixed.err
    (entry,) = fixed.json()["points"]
    assert entry["forgotten"] and entry["repaired"]
    ids = [p["id"] for p in cli("snapshots", "--json").json()]
    assert damaged not in ids and entry["repaired"] in ids
    assert cli("check", "--read-data").rc == 0
    assert cli("prune").rc == 0
    # A second run finds nothing to do.
    assert cli("repair", "points", "--json").json()["points"] == []

    # The repaired point is the next parent: the dropped file is read again.
    nxt = cli("backup", str(src), "--json")
    assert nxt.rc == 0, nxt.err
    assert nxt.summary()["files_new"] == 1
    restore_equal(cli, nxt.summary()["point_id"], tmp_path / "r", src)


def test_repair_points_keeps_the_original_without_forget(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = make_src(tmp_path)
    write_file(src / "lost.bin", random_bytes(300_000, 4))
    damaged = backup(cli, str(src))
    pack_of(initialized_repo, damaged, "lost.bin").unlink()
    assert cli("repair", "index").rc == 0
    once = cli("repair", "points", "--json").json()["points"]
    twice = cli("repair", "points", "--json").json()["points"]
    assert once[0]["repaired"] == twice[0]["repaired"]  # not written twice
    points = cli("snapshots", "--json").json()
    assert {p["id"] for p in points} == {damaged, once[0]["repaired"]}
    (twin,) = [p for p in points if p["id"] != damaged]
    assert "repaired" in twin["tags"]


def test_repair_takes_the_exclusive_lock(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    repo = open_local_repository(initialized_repo)
    try:
        write_lock(repo, pid=os.getpid())
    finally:
        repo.close()
    result = cli("repair", "index")
    assert result.rc == 11
    line = assert_one_line_error(result, "repository is locked")
    assert "--remove-all" not in line


def test_repair_points_refuses_a_block_point_and_names_its_lost_blocks(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(random_bytes(3 * 1024 * 1024, 5))
    point = backup(cli, "--image", str(disk))
    biggest = max((initialized_repo / "data").glob("*/*"), key=lambda p: p.stat().st_size)
    biggest.unlink()
    assert cli("repair", "index").rc == 0
    result = cli("repair", "points", "--json")
    assert result.rc == 1
    (entry,) = result.json()["points"]
    assert entry["point"] == point and entry["repaired"] is None and entry["refused"]
    assert "block at offset 0" in entry["damaged"]
    assert [p["id"] for p in cli("snapshots", "--json").json()] == [point]


def test_repair_points_empties_a_directory_whose_tree_is_lost(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = make_src(tmp_path)
    write_file(src / "sub" / "inner.bin", random_bytes(1000, 6))
    point = backup(cli, str(src))
    repo = open_local_repository(initialized_repo)
    try:
        root = RecoveryPoint.from_doc(repo.load_point(point)).tree
        (sub,) = [n for _, n in iter_tree(repo, bytes.fromhex(root)) if n.name == b"sub"]
        assert sub.subtree is not None
        tree_pack = repo.locate(sub.subtree).pack
    finally:
        repo.close()
    # Lose only the subdirectory's tree: an index without its entry (the tree
    # pack holds the root tree too).
    repo = open_local_repository(initialized_repo)
    try:
        names = repo.list_index_files()
        packs = entries_by_pack(repo.read_index_files().values())
        packs[tree_pack] = [e for e in packs[tree_pack] if e[0] != sub.subtree]
        write_index_files(repo, packs)
        for name in names:
            repo.backend.delete(name)
    finally:
        repo.close()
    result = cli("repair", "points", "--forget", "--json")
    assert result.rc == 0, result.err
    (entry,) = result.json()["points"]
    assert [p.rsplit("/", 2)[-2:] for p in entry["damaged"]] == [["sub", ""]]
    assert cli("check").rc == 0
    listing = cli("ls", entry["repaired"], "--json")
    assert listing.rc == 0, listing.err
    assert "keep.bin" in listing.out and "inner.bin" not in listing.out
