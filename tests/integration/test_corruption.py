"""Damaged storage: a flipped byte in a pack, an index file, a tree or a point is found,
named, and reported in one line; everything undamaged still restores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.repository.format import BlobType
from strongroom.repository.pack import PackEntry, read_pack_header
from strongroom.services.walk import iter_tree
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import assert_one_line_error
from tests.helpers.tree import make_small_tree, random_bytes, write_file


@dataclass
class Blob:
    pack_path: Path
    entry: PackEntry


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def blobs(repo_path: Path, blob_type: BlobType) -> list[Blob]:
    """Every blob of `blob_type` in the repository's packs, from the pack headers."""
    repo = open_local_repository(repo_path)
    found = []
    for pack in sorted((repo_path / "data").glob("*/*")):
        for entry in read_pack_header(pack.read_bytes(), repo.sealer, pack.name):
            if entry.type == blob_type:
                found.append(Blob(pack, entry))
    repo.close()
    return found


def files_by_chunk(repo_path: Path, point_tree: str) -> dict[bytes, list[str]]:
    repo = open_local_repository(repo_path)
    out: dict[bytes, list[str]] = {}
    for path, node in iter_tree(repo, bytes.fromhex(point_tree)):
        for cid in node.chunks:
            out.setdefault(cid, []).append(path.decode())
    repo.close()
    return out


@pytest.fixture
def backed_up(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    src = tmp_path / "src"
    make_small_tree(src)
    write_file(src / "big.bin", random_bytes(6 * 1024 * 1024, 42))
    result = cli("backup", str(src), "--json")
    assert result.rc == 0, result.err
    (point,) = cli("snapshots", "--json").json()
    return src, point


def test_damaged_data_chunk(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    backed_up: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    src, point = backed_up
    owners = files_by_chunk(initialized_repo, point["tree"])
    # A chunk in the middle of the big file: flip a byte inside its sealed blob.
    victim = next(b for b in blobs(initialized_repo, BlobType.DATA) if b.entry.chunk_id in owners)
    flip_byte(victim.pack_path, victim.entry.offset + victim.entry.length // 2)
    (damaged_file,) = owners[victim.entry.chunk_id]
    pack_hex = victim.pack_path.name[:16]
    chunk_hex = victim.entry.chunk_id.hex()[:16]

    # The structure is intact: the quick check passes (at most with warnings).
    quick = cli("check")
    assert quick.rc == 0, quick.err

    full = cli("check", "--read-data")
    assert full.rc == 1
    assert "Traceback" not in full.err
    assert pack_hex in full.err and chunk_hex in full.err
    assert damaged_file in full.err
    doc = cli("check", "--read-data", "--json")
    assert doc.rc == 1
    report = doc.document()
    assert report["ok"] is False
    assert report["damaged_files"] == {point["id"]: [damaged_file]}
    assert any(chunk_hex in e and pack_hex in e for e in report["errors"])

    target = tmp_path / "restore"
    restored = cli("restore", "latest", "--target", str(target), "--json")
    assert restored.rc == 1
    assert "Traceback" not in restored.err
    summary = restored.summary()
    assert summary["damaged"] == [damaged_file]
    assert damaged_file in restored.err
    # Every other file is restored exactly.
    root = target / str(src).lstrip("/")
    others = [p for p in src.rglob("*") if p.is_file() and str(p) != damaged_file]
    assert len(others) >= 6
    for path in others:
        assert (root / path.relative_to(src)).read_bytes() == path.read_bytes(), path


def test_damaged_tree(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    backed_up: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    _src, point = backed_up
    tree_blobs = blobs(initialized_repo, BlobType.TREE)
    (root,) = [b for b in tree_blobs if b.entry.chunk_id.hex() == point["tree"]]
    flip_byte(root.pack_path, root.entry.offset + root.entry.length // 2)
    pack_hex = root.pack_path.name[:16]

    listed = cli("ls", "latest")
    assert listed.rc == 1
    assert_one_line_error(listed, pack_hex)
    restored = cli("restore", "latest", "--target", str(tmp_path / "restore"))
    assert restored.rc == 1
    assert_one_line_error(restored, pack_hex)
    checked = cli("check", "--read-data")
    assert checked.rc == 1
    assert "Traceback" not in checked.err and pack_hex in checked.err


def test_damaged_index_file(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    backed_up: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    src, _ = backed_up
    (index,) = (initialized_repo / "index").glob("*")
    flip_byte(index, index.stat().st_size // 2)
    # Restore needs chunks only that file knew; check names it.
    for args in (("restore", "latest", "--target", str(tmp_path / "restore")), ("check",)):
        result = cli(*args)
        assert result.rc == 1, args
        assert index.name[:16] in result.err, args
    # A backup goes on: the damaged file is reported once and its chunks stored again.
    backup = cli("backup", str(src))
    assert backup.rc == 0, backup.err
    assert backup.err.count(index.name) == 1


def test_damaged_point(
    cli: CliRunner,
    initialized_repo: Path,
    backed_up: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    _, point = backed_up
    path = initialized_repo / "points" / point["id"]
    flip_byte(path, path.stat().st_size // 2)
    for args in (("ls", point["id"][:8]), ("check",)):
        result = cli(*args)
        assert result.rc == 1, args
        assert point["id"][:16] in result.err, args
    # Listing goes on without it, naming it once; forget removes it unread.
    listed = cli("snapshots")
    assert listed.rc == 0 and listed.err.count(point["id"]) == 1
    assert cli("forget", point["id"][:16]).rc == 0
    assert not path.exists()


def test_missing_pack(
    tmp_path: Path,
    cli: CliRunner,
    initialized_repo: Path,
    backed_up: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    _src, point = backed_up
    owners = files_by_chunk(initialized_repo, point["tree"])
    data_packs = {b.pack_path for b in blobs(initialized_repo, BlobType.DATA)}
    lost = sorted(data_packs)[0]
    lost_chunks = {
        b.entry.chunk_id for b in blobs(initialized_repo, BlobType.DATA) if b.pack_path == lost
    }
    lost.unlink()
    quick = cli("check", "--json")
    assert quick.rc == 1
    report = quick.json()
    assert any(lost.name in e and "missing" in e for e in report["errors"])
    expected = sorted({f for c in lost_chunks for f in owners.get(c, [])})
    assert sorted(report["damaged_files"][point["id"]]) == expected
    restored = cli("restore", "latest", "--target", str(tmp_path / "restore"), "--json")
    assert restored.rc == 1
    assert sorted(restored.summary()["damaged"]) == expected
    # prune refuses to work on a repository that lost data it needs.
    pruned = cli("prune")
    assert pruned.rc == 1
    assert_one_line_error(pruned, "check")


def test_prune_refuses_to_repack_damaged_data_and_deletes_nothing(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    write_file(src / "kept.bin", random_bytes(300_000, 1))
    write_file(src / "changing.bin", random_bytes(2 * 1024 * 1024, 2))
    first = cli("backup", str(src), "--json").summary()
    write_file(src / "changing.bin", random_bytes(2 * 1024 * 1024, 3))
    assert cli("backup", str(src)).rc == 0
    assert cli("forget", first["point_id"]).rc == 0
    # The first pack now holds used chunks (kept.bin) and unused ones: prune would
    # repack it. Damage a used chunk in it.
    (point,) = cli("snapshots", "--json").json()
    owners = files_by_chunk(initialized_repo, point["tree"])
    kept_chunks = {c for c, paths in owners.items() if paths == [str(src / "kept.bin")]}
    victim = next(
        b for b in blobs(initialized_repo, BlobType.DATA) if b.entry.chunk_id in kept_chunks
    )
    flip_byte(victim.pack_path, victim.entry.offset + victim.entry.length // 2)
    before = sorted(p.name for p in initialized_repo.rglob("*") if "locks" not in p.parts)

    pruned = cli("prune")
    assert pruned.rc == 1
    assert_one_line_error(pruned, victim.entry.chunk_id.hex()[:16])
    after = sorted(p.name for p in initialized_repo.rglob("*") if "locks" not in p.parts)
    assert set(before) <= set(after)  # nothing was deleted
    assert cli("check").rc == 0  # the structure is still intact
