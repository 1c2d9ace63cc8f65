"""A hostile repository (issue #10): damaged and foreign objects are reported once
and skipped, ids match content, decompression and reads are bounded."""

from __future__ import annotations

import os
import random
from pathlib import Path

import blake3
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.repository import format as fmt
from strongroom.repository.check import CheckReport, check_pack_data, check_structure
from strongroom.repository.compress import ZSTD, Compressor
from strongroom.repository.format import BlobType
from strongroom.repository.pack import PackScan
from strongroom.repository.repo import Repository
from strongroom.services.maintenance import check, prune
from strongroom.services.points import list_points
from tests.conftest import open_local_repository
from tests.helpers.cli import PASSWORD

KiB = 1024
MiB = 1024 * KiB


def _point(repo: Repository, tree: bytes, host: str = "h") -> str:
    return repo.save_point(
        {
            "version": 1,
            "kind": "files",
            "time": "2026-01-01T00:00:00+00:00",
            "host": host,
            "paths": ["/src"],
            "tree": tree.hex(),
        }
    )


def _empty_tree_point(repo: Repository, host: str = "h") -> str:
    from strongroom.model.tree import encode_tree

    tree = repo.put_chunk(BlobType.TREE, encode_tree([]))
    repo.flush()
    return _point(repo, tree, host)


# --- decompression ------------------------------------------------------------


def test_a_frame_declaring_a_huge_size_is_refused_before_decompressing() -> None:
    """The attack: 32 KB of zstd that declares (and holds) 64 MiB of zeros; the old
    code let zstandard allocate what the frame declared, whatever the bound."""
    bomb = bytes([ZSTD]) + zstandard.ZstdCompressor(write_content_size=True).compress(
        bytes(64 * MiB)
    )
    assert len(bomb) < 64 * KiB
    with pytest.raises(IntegrityError, match="declares 67108864 bytes"):
        Compressor(1).unpack(bomb, 32 * KiB)


def test_a_frame_without_a_declared_size_is_refused() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 1000)
    with pytest.raises(IntegrityError, match="does not declare its size"):
        Compressor(1).unpack(bytes([ZSTD]) + frame, 1000)


def test_a_raw_payload_beyond_the_bound_is_refused() -> None:
    with pytest.raises(IntegrityError):
        Compressor(0).unpack(b"\0" + b"x" * 101, 100)


# --- chunk ids ----------------------------------------------------------------


def test_a_chunk_sealed_under_another_id_is_refused(memory_repo: Repository) -> None:
    """A key holder could seal any content under any id (a tree naming itself); the
    content must hash to the id it is loaded by."""
    forged_id = os.urandom(32)
    data = b"not what the id says"
    sealed = memory_repo.seal_chunk(forged_id, BlobType.TREE, data)
    memory_repo._queue_sealed(forged_id, BlobType.TREE, sealed, len(data))
    memory_repo.flush()
    with pytest.raises(IntegrityError, match="does not hash to its id"):
        memory_repo.load_chunk(forged_id, BlobType.TREE)
    good = memory_repo.put_chunk(BlobType.TREE, data)
    memory_repo.flush()
    assert memory_repo.load_chunk(good, BlobType.TREE) == data


# --- points -------------------------------------------------------------------


def test_swapped_points_are_refused(local_repo: Repository, repo_path: Path) -> None:
    a = _empty_tree_point(local_repo, "host-a")
    b = _empty_tree_point(local_repo, "host-b")
    pa, pb = repo_path / "points" / a, repo_path / "points" / b
    blob_a, blob_b = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(blob_b)
    pb.write_bytes(blob_a)
    repo = open_local_repository(repo_path)
    for point_hex in (a, b):
        with pytest.raises(IntegrityError, match="does not match its name"):
            repo.load_point(point_hex)
    assert list_points(repo) == []
    assert set(repo.damage.found) == {f"points/{a}", f"points/{b}"}
    result = check(repo)
    assert not result.report.ok
    assert sum("does not match its name" in e for e in result.report.errors) == 2


def test_prune_refuses_with_an_unreadable_point_and_names_the_fix(
    local_repo: Repository, repo_path: Path
) -> None:
    good = _empty_tree_point(local_repo, "good")
    bad = _empty_tree_point(local_repo, "bad")
    path = repo_path / "points" / bad
    path.write_bytes(path.read_bytes()[:-1])
    repo = open_local_repository(repo_path)
    with pytest.raises(IntegrityError) as info:
        prune(repo)
    message = str(info.value)
    assert "\n" not in message and f"points/{bad}" in message
    assert f"strongroom forget {bad[:16]}" in message
    assert [p.id for p in list_points(repo)] == [good]
    repo.delete_point(bad)  # forget by id works without reading it
    prune(repo)


# --- index files ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "junk-name", "renamed"])
def test_a_damaged_index_file_is_skipped_and_reported(
    local_repo: Repository, repo_path: Path, damage: str
) -> None:
    kept = local_repo.put_chunk(BlobType.DATA, b"kept" * 100)
    local_repo.flush()
    lost = local_repo.put_chunk(BlobType.DATA, b"lost" * 100)
    local_repo.flush()
    files = {p.name: p for p in (repo_path / "index").iterdir()}
    assert len(files) == 2
    victim = next(
        p
        for p in files.values()
        if lost in {e[0] for e in local_repo.read_index_file(f"index/{p.name}").iter_entries()}
    )
    blob = victim.read_bytes()
    if damage == "flip":
        victim.write_bytes(blob[:40] + bytes([blob[40] ^ 1]) + blob[41:])
    elif damage == "truncate":
        victim.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        victim.write_bytes(b"")
    elif damage == "junk-name":
        (repo_path / "index" / "junk").write_bytes(b"junk!")
        victim = repo_path / "index" / "junk"
    elif damage == "renamed":
        victim.rename(repo_path / "index" / ("0" * 64))
        victim = repo_path / "index" / ("0" * 64)
    repo = open_local_repository(repo_path)
    assert repo.load_chunk(kept) == b"kept" * 100
    assert list(repo.damage.found) == [f"index/{victim.name}"]
    assert "\n" not in repo.damage.found[f"index/{victim.name}"]
    if damage != "junk-name":
        assert not repo.has_chunk(lost)  # a backup stores it again
    report = CheckReport()
    check_structure(repo, report)  # goes on, the damage is in the log
    assert f"index/{victim.name}" in repo.damage.found


# --- data/ ----------------------------------------------------------------------


def test_foreign_names_under_data_are_reported_not_parsed(
    local_repo: Repository, repo_path: Path
) -> None:
    _empty_tree_point(local_repo)
    (repo_path / "data" / "aa").mkdir(exist_ok=True)
    (repo_path / "data" / "aa" / "junk").write_bytes(b"junk!")
    (repo_path / "data" / "zz").mkdir()
    (repo_path / "data" / "zz" / ("ab" * 32)).write_bytes(b"misplaced")
    repo = open_local_repository(repo_path)
    packs = repo.list_packs()
    assert all(len(p) == 32 for p in packs)
    assert set(repo.damage.found) == {"data/aa/junk", f"data/zz/{'ab' * 32}"}
    plan = prune(repo, dry_run=True)
    assert plan.orphans == []  # the foreign objects are not ours to delete
    result = check(open_local_repository(repo_path), read_data=True)
    assert any("data/aa/junk" in e for e in result.report.errors)


def test_check_reads_a_grown_pack_by_header_never_whole(
    local_repo: Repository, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(1).randbytes(200 * KiB)
    cid = local_repo.put_chunk(BlobType.DATA, data)
    local_repo.flush()
    (pack_file,) = [p for p in (repo_path / "data").rglob("*") if p.is_file()]
    with open(pack_file, "ab") as f:
        f.truncate(pack_file.stat().st_size + 64 * MiB)  # grown: 64 MiB more (sparse)
    repo = open_local_repository(repo_path)
    reads: list[int] = []
    real_get_range = repo.backend.get_range

    def get_range(name: str, offset: int, length: int) -> bytes:
        reads.append(length)
        return real_get_range(name, offset, length)

    real_get = repo.backend.get

    def get(name: str) -> bytes:
        assert not name.startswith("data/"), f"{name} read whole"
        return real_get(name)

    monkeypatch.setattr(repo.backend, "get_range", get_range)
    monkeypatch.setattr(repo.backend, "get", get)
    report = CheckReport()
    check_structure(repo, report)
    pack = bytes.fromhex(pack_file.name)
    check_pack_data(repo, pack, report.packs[pack], report)
    assert max(reads) <= 8 * MiB
    assert any("content does not match its name" in e for e in report.errors)
    assert any("header" in e or "pack magic" in e or "length" in e for e in report.errors)
    assert cid not in report.damaged_chunks  # the chunk itself is intact


@given(
    data=st.binary(max_size=3000),
    wanted=st.lists(st.tuples(st.integers(0, 3100), st.integers(0, 400)), max_size=8),
    piece=st.integers(1, 700),
    extra=st.integers(-5, 5),
)
def test_pack_scan_hands_out_exact_ranges_and_hashes_every_byte(
    data: bytes, wanted: list[tuple[int, int]], piece: int, extra: int
) -> None:
    size = max(0, len(data) + extra)
    scan = PackScan(lambda o, n: data[o : o + n], size, piece)
    for off, length, got in scan.ranges(wanted):
        expected = data[off : off + length] if off + length <= size else b""
        if off + length <= min(size, len(data)):
            assert got == expected
        else:
            assert got is None
    digest = scan.digest()
    if size <= len(data):
        assert digest == blake3.blake3(data[:size]).digest() and not scan.short
    else:
        assert scan.short


def test_a_repository_opens_with_a_password_only(local_repo: Repository, repo_path: Path) -> None:
    assert open_local_repository(repo_path, PASSWORD).damage.found == {}
    assert fmt.CONFIG_NAME == "config"
