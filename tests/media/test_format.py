"""The media format end to end on the memory drive: sessions written from a
real repository, read back with the password alone, materialized as a
repository folder, and restored by the ordinary `strongroom restore`
(docs/format.md §16)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.errors import EndOfMedium, IntegrityError, MediaError, PointNotFound, WrongPassword
from strongroom.media.drive import Position
from strongroom.media.format import materialize, read_cartridge, scan
from strongroom.media.label import write_label
from strongroom.media.writer import SessionWritten, write_session
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.services.walk import referenced_by_points
from strongroom.storage.local import LocalBackend
from tests.helpers.cli import FAST_KDF, PASSWORD, run_cli
from tests.helpers.compare import walk_differences
from tests.media.memory_drive import MemoryDrive, MemoryTape

RECORD = 4096  # small records: packs span many, spanning lands mid-pack


@dataclass
class Source:
    repo: Path
    env: dict[str, str]
    tree: Path  # as restored for `files_a`
    image: Path
    files_a: str
    files_b: str
    block: str


def _backup(env: dict[str, str], *args: str) -> str:
    result = run_cli(["backup", *args, "--json"], env)
    assert result.rc == 0, result.err
    return str(result.summary()["point_id"])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A repository with two files points and an image point (made once)."""
    base = tmp_path_factory.mktemp("media-source")
    home = base / "home"
    home.mkdir()
    repo = base / "repo"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "STRONGROOM_KDF": FAST_KDF,
        "STRONGROOM_PASSWORD": PASSWORD,
        "STRONGROOM_REPO": str(repo),
    }
    Repository.init(LocalBackend(repo), PASSWORD.encode(), kdf=KdfParams(1, 8192, 1)).close()
    rng = random.Random(14)
    tree = base / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "big.bin").write_bytes(rng.randbytes(1_500_000))
    (tree / "sub" / "small.txt").write_bytes(b"hello media\n")
    (tree / "empty").write_bytes(b"")
    os.symlink("sub/small.txt", tree / "link")
    files_a = _backup(env, str(tree))
    snapshot = base / "tree-a"
    assert run_cli(["restore", files_a, "--target", str(snapshot)], env).rc == 0
    (tree / "second.bin").write_bytes(rng.randbytes(700_000))
    files_b = _backup(env, str(tree))
    image = base / "disk.raw"
    with image.open("wb") as f:
        f.write(rng.randbytes(1 << 20))
        f.seek(3 << 20)
        f.write(rng.randbytes(1 << 20))
    block = _backup(env, "--image", str(image))
    return Source(repo, env, snapshot, image, files_a, files_b, block)


@pytest.fixture
def repo(source: Source) -> Iterator[Repository]:
    opened = Repository.open(LocalBackend(source.repo), PASSWORD.encode())
    yield opened
    opened.close()


def _labelled(repo: Repository, barcode: str = "A00001L8", **tape: int) -> MemoryDrive:
    drive = MemoryDrive(MemoryTape(**tape), record_size=RECORD)
    write_label(drive, repo.master, repo.config.id, barcode, "offsite", 1)
    return drive


def _write(drive: MemoryDrive, repo: Repository, points: list[str], **kw: object) -> SessionWritten:
    return write_session(drive, repo, points, reach=referenced_by_points, **kw)  # type: ignore[arg-type]


def _restore(env: dict[str, str], repo: Path, point: str, target: Path) -> None:
    result = run_cli(
        ["restore", point, "--target", str(target)], {**env, "STRONGROOM_REPO": str(repo)}
    )
    assert result.rc == 0, result.err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_three_sessions_read_back_and_restore_with_the_password_alone(
    source: Source, repo: Repository, tmp_path: Path
) -> None:
    drive = _labelled(repo)
    written = [_write(drive, repo, [p]) for p in (source.files_a, source.files_b, source.block)]
    assert [w.session for w in written] == [1, 2, 3]
    assert [(w.data_file, w.catalog_file) for w in written] == [(1, 2), (3, 4), (5, 6)]
    assert not any(w.deferred or w.damaged for w in written)
    rows = written[2].rows()
    assert {r[2] for r in rows} == {source.block} and rows[0][:2] == (written[2].media_uuid, 3)

    cartridge = read_cartridge(drive, password=PASSWORD.encode())
    assert cartridge.label.barcode == "A00001L8" and cartridge.label.pool == "offsite"
    assert [s.problem for s in cartridge.sessions] == ["", "", ""]
    assert set(cartridge.points()) == {source.files_a, source.files_b, source.block}
    # Every pack is where the catalog says: its frame starts that record.
    for w in written:
        catalog = cartridge.sessions[w.session - 1].catalog
        assert catalog is not None and catalog.packs == w.packs

    target = tmp_path / "from-tape"
    done = materialize(drive, cartridge, target, [source.files_a, source.block])
    assert sorted(done.points) == sorted([source.files_a, source.block]) and not done.incomplete
    _restore(source.env, target, source.files_a, tmp_path / "files")
    assert (
        walk_differences(source.tree, tmp_path / "files", check_atime=False, check_root=False) == []
    )
    _restore(source.env, target, source.block, tmp_path / "disk.raw")
    assert _sha(tmp_path / "disk.raw") == _sha(source.image)
    # Only what was asked for: files_b is not in the folder.
    assert {p.name for p in (target / "points").iterdir()} == {source.files_a, source.block}
    check = run_cli(["check", "--read-data"], {**source.env, "STRONGROOM_REPO": str(target)})
    assert check.rc == 0, check.err + check.out


def test_wrong_password_and_unknown_point(source: Source, repo: Repository, tmp_path: Path) -> None:
    drive = _labelled(repo)
    _write(drive, repo, [source.files_a])
    with pytest.raises(WrongPassword):
        read_cartridge(drive, password=b"not the password")
    cartridge = read_cartridge(drive, master=repo.master)
    with pytest.raises(PointNotFound):
        materialize(drive, cartridge, tmp_path / "t", [source.block])


def test_a_full_cartridge_ends_the_session_and_the_next_one_completes_it(
    source: Source, repo: Repository, tmp_path: Path
) -> None:
    points = [source.files_a, source.files_b, source.block]
    probe = _labelled(repo)
    whole = _write(probe, repo, points)
    total = sum(p.records for p in whole.packs)
    assert len(whole.packs) >= 4
    # Room for the label, the session header and about half the packs, plus
    # an early-warning zone the catalog fits in.
    warning = 16 * RECORD
    first = _labelled(repo, capacity=(3 + total // 2) * RECORD + warning, early_warning=warning)
    one = _write(first, repo, points)
    assert one.ended_early and one.packs and one.deferred
    assert [p.pack_id for p in one.packs] + one.deferred == [p.pack_id for p in whole.packs]
    # The abandoned pack left records on the tape beyond the last complete one.
    last = one.packs[-1]
    assert first.tape is not None
    data_records = first.item_index(Position(one.data_file + 1, 0)) - first.item_index(
        Position(one.data_file, 0)
    )
    assert data_records - 1 > last.record + last.records

    second = _labelled(repo, "A00002L8")
    two = _write(second, repo, points, packs=one.deferred, job=one.job, continued_from=one.media_id)
    assert not two.deferred and [p.pack_id for p in two.packs] == one.deferred

    target = tmp_path / "from-tape"
    a = read_cartridge(first, password=PASSWORD.encode())
    assert a.sessions[0].catalog is not None and a.sessions[0].catalog.deferred == one.deferred
    partial = materialize(first, a, target)
    assert partial.incomplete  # some point waits for the second cartridge
    b = read_cartridge(second, password=PASSWORD.encode())
    catalog = b.sessions[0].catalog
    assert catalog is not None and catalog.continued_from == one.media_id and catalog.job == one.job
    done = materialize(second, b, target)
    assert sorted(done.points) == sorted(points) and not done.incomplete
    _restore(source.env, target, source.files_a, tmp_path / "files")
    assert (
        walk_differences(source.tree, tmp_path / "files", check_atime=False, check_root=False) == []
    )
    _restore(source.env, target, source.block, tmp_path / "disk.raw")
    assert _sha(tmp_path / "disk.raw") == _sha(source.image)


def test_no_room_for_the_catalog_is_end_of_medium(source: Source, repo: Repository) -> None:
    drive = _labelled(repo, capacity=40 * RECORD)  # no early warning at all
    with pytest.raises(EndOfMedium, match="no room for session 1's catalog"):
        _write(drive, repo, [source.files_a, source.block])
    cartridge = read_cartridge(drive, master=repo.master)
    assert [s.catalog for s in cartridge.sessions] == [None]
    assert "truncated" in cartridge.sessions[0].problem


def test_a_truncated_session_is_skipped_and_later_ones_append_after_it(
    source: Source, repo: Repository, tmp_path: Path
) -> None:
    drive = _labelled(repo)
    _write(drive, repo, [source.files_a])
    died = _write(drive, repo, [source.files_b])
    assert drive.tape is not None
    # The writer of session 2 died in its data file: no file mark, no catalog.
    cut = drive.item_index(Position(died.data_file, 2))
    del drive.tape.items[cut:]
    third = _write(drive, repo, [source.block])
    assert third.session == 3 and third.data_file == died.data_file + 1

    cartridge = read_cartridge(drive, password=PASSWORD.encode())
    problems = [(s.number, s.catalog is not None, s.problem[:9]) for s in cartridge.sessions]
    assert problems == [(1, True, ""), (2, False, "truncated"), (3, True, "")]
    assert set(cartridge.points()) == {source.files_a, source.block}
    done = materialize(drive, cartridge, tmp_path / "t")
    assert sorted(done.points) == sorted([source.files_a, source.block])
    _restore(source.env, tmp_path / "t", source.block, tmp_path / "disk.raw")
    assert _sha(tmp_path / "disk.raw") == _sha(source.image)


def test_a_damaged_record_names_its_file_and_records(
    source: Source, repo: Repository, tmp_path: Path
) -> None:
    drive = _labelled(repo)
    written = _write(drive, repo, [source.files_a])
    assert drive.tape is not None
    place = max(written.packs, key=lambda p: p.records)
    index = drive.item_index(Position(place.file, place.record + 1))
    record = bytearray(drive.tape.items[index] or b"")
    record[100] ^= 1
    drive.tape.items[index] = bytes(record)
    cartridge = read_cartridge(drive, master=repo.master)
    last = place.record + place.records - 1
    with pytest.raises(IntegrityError, match=f"file 1, records {place.record}-{last}"):
        materialize(drive, cartridge, tmp_path / "t")
    # Nothing of the damaged pack, no point; the packs copied before it are indexed.
    assert not list(tmp_path.glob("t/points/*"))
    assert not list(tmp_path.glob(f"t/data/*/{place.pack_id.hex()}"))
    copied = len(list(tmp_path.glob("t/data/*/*")))
    assert len(list(tmp_path.glob("t/index/*"))) == (1 if copied else 0)


def test_a_damaged_catalog_loses_only_its_session(source: Source, repo: Repository) -> None:
    drive = _labelled(repo)
    first = _write(drive, repo, [source.files_a])
    _write(drive, repo, [source.block])
    assert drive.tape is not None
    index = drive.item_index(Position(first.catalog_file, 0))
    record = bytearray(drive.tape.items[index] or b"")
    last = len(record.rstrip(b"\0")) - 1  # the sealed part's last byte in this record
    record[last] ^= 0xFF
    drive.tape.items[index] = bytes(record)
    cartridge = read_cartridge(drive, master=repo.master)
    assert cartridge.sessions[0].catalog is None
    assert "failed authentication" in cartridge.sessions[0].problem
    assert set(cartridge.points()) == {source.block}


def test_writing_needs_our_label(source: Source, repo: Repository) -> None:
    blank = MemoryDrive(MemoryTape(), record_size=RECORD)
    with pytest.raises(MediaError, match="not labelled for this repository"):
        _write(blank, repo, [source.files_a])
    assert scan(blank).sessions == []
