"""copy-to-media on the virtual library with small cartridges: points
spanning three cartridges, every cartridge's catalog rows against what is on
it, read back and restored byte-exactly; skipping, no writable medium,
recycling only online, a drive error mid-copy (docs/media.md, "Copying
points to media")."""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.catalog import Catalog, MediumState
from strongroom.errors import DriveError, MediaError
from strongroom.media.format import materialize, read_cartridge
from strongroom.media.virtual import Layout, VirtualLibrary
from strongroom.media.virtual_drive import VirtualDrive
from strongroom.media.writer import point_packs
from strongroom.repository import format as fmt
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.services.copy_to_media import copy_to_media
from strongroom.services.inventory import Detailed, Keys, inventory
from strongroom.services.media_pools import create_pool, label_media
from strongroom.services.walk import referenced_by_points
from strongroom.storage.local import LocalBackend
from tests.helpers.cli import FAST_KDF, PASSWORD, run_cli
from tests.helpers.compare import walk_differences

RECORD = 4096
BARCODES = [f"T{n:05d}L8" for n in range(1, 7)]
MB = 1 << 20


@dataclass
class Source:
    repo: Path
    env: dict[str, str]
    trees: dict[str, Path]  # files point -> its tree as restored from the repository
    image: Path
    block: str

    @property
    def files_a(self) -> str:
        return next(iter(self.trees))

    @property
    def files_b(self) -> str:
        return list(self.trees)[1]


def _backup(env: dict[str, str], *args: str) -> str:
    result = run_cli(["backup", *args, "--json"], env)
    assert result.rc == 0, result.err
    return str(result.summary()["point_id"])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """Two file tree points and an image point, each in a pack of about 1 MiB
    (a backup writes one pack here): three packs, so that cartridges of one
    and a half packs make a copy of the three span three cartridges."""
    base = tmp_path_factory.mktemp("copy-source")
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
    rng = random.Random(1414)
    trees = {}
    for name in ("a", "b"):
        tree = base / f"tree-{name}"
        (tree / "sub").mkdir(parents=True)
        (tree / "big.bin").write_bytes(rng.randbytes(MB))
        (tree / "sub" / "small.txt").write_bytes(f"hello media {name}\n".encode())
        (tree / "empty").write_bytes(b"")
        os.symlink("sub/small.txt", tree / "link")
        point = _backup(env, str(tree))
        reference = base / f"restored-{name}"  # as the disk repository restores it
        assert run_cli(["restore", point, "--target", str(reference)], env).rc == 0
        (found,) = reference.rglob("big.bin")
        assert found.read_bytes() == (tree / "big.bin").read_bytes()
        trees[point] = reference
    image = base / "disk.raw"
    with image.open("wb") as f:
        f.write(rng.randbytes(MB // 2))
        f.seek(3 * MB)
        f.write(rng.randbytes(MB // 2))
    block = _backup(env, "--image", str(image))
    return Source(repo, env, trees, image, block)


@pytest.fixture
def repo(source: Source) -> Iterator[Repository]:
    opened = Repository.open(LocalBackend(source.repo), PASSWORD.encode())
    yield opened
    opened.close()


def _size(repo: Repository, points: list[str]) -> tuple[int, int]:
    """(all pack bytes, the largest pack) of the points."""
    needs = point_packs(repo, points, referenced_by_points)
    packs = {p for v in needs.values() for p in v}
    sizes = [repo.backend.size(fmt.pack_name(p.hex())) for p in packs]
    return sum(sizes), max(sizes)


def _library(tmp_path: Path, capacity: int, cartridges: int = 4) -> VirtualLibrary:
    layout = Layout(slots=8, drives=1, import_export=1, capacity=capacity, record_size=RECORD)
    return VirtualLibrary.create(
        "vlib", layout, root=tmp_path / "vlib", cartridges=BARCODES[:cartridges]
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    opened = Catalog.open(str(tmp_path / "catalog.sqlite"))
    yield opened
    opened.close()


def _spanning_capacity(repo: Repository, points: list[str]) -> int:
    """A capacity that makes the points span three cartridges."""
    total, largest = _size(repo, points)
    assert total - 3 * largest < largest // 4  # three big packs, and small ones
    return largest * 3 // 2 + 32 * RECORD


def _read_back(
    library: VirtualLibrary, repo: Repository, barcode: str, target: Path
) -> tuple[dict[bytes, tuple[int, int, int, int]], set[str]]:
    """Load, read and materialize one cartridge; its pack places and points."""
    slot = library.status().where(barcode)
    assert slot is not None
    library.load(slot.address, 0)
    drive = library.drive(0)
    try:
        cartridge = read_cartridge(drive, password=PASSWORD.encode())
        assert cartridge.label.barcode == barcode
        assert [s.problem for s in cartridge.sessions if s.problem] == []
        materialize(drive, cartridge, target)
        places = {
            p.pack_id: (p.file, p.record, p.records, p.length) for p in cartridge.places().values()
        }
        return places, set(cartridge.points())
    finally:
        drive.close()
        library.unload(0)


def _restore_and_compare(source: Source, target: Path, tmp_path: Path) -> None:
    """Every point of `source` restored from `target` equals its source."""
    env = {**source.env, "STRONGROOM_REPO": str(target)}
    for point, tree in source.trees.items():
        files = tmp_path / f"files-{point[:8]}"
        assert run_cli(["restore", point, "--target", str(files)], env).rc == 0
        assert walk_differences(tree, files, check_atime=False, check_root=False) == []
    disk = tmp_path / "disk.raw"
    assert run_cli(["restore", source.block, "--target", str(disk)], env).rc == 0
    sha = hashlib.sha256
    assert sha(disk.read_bytes()).digest() == sha(source.image.read_bytes()).digest()


def test_points_span_three_cartridges_and_restore_from_them(
    source: Source,
    repo: Repository,
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    points = [source.files_a, source.files_b, source.block]
    library = _library(tmp_path, _spanning_capacity(repo, points))
    create_pool(catalog, "offsite", "7y", None)
    labelled = label_media(catalog, library, repo, "offsite", BARCODES[:4])
    assert [r.sequence for r in labelled] == [1, 2, 3, 4]
    seen: list[int] = []

    result = copy_to_media(
        catalog, library, repo, points, "offsite", progress=lambda p: seen.append(p.bytes_done)
    )
    assert sorted(result.written) == sorted(points) and not result.skipped
    assert [c.barcode for c in result.cartridges] == BARCODES[:3]
    assert [c.state for c in result.cartridges] == ["full", "full", "appending"]
    assert seen and seen == sorted(seen) and seen[-1] == result.bytes_written
    media = {m.barcode: m for m in catalog.list_media(pool="offsite")}
    assert [str(media[b].state) for b in BARCODES[:4]] == ["full", "full", "appending", "free"]
    assert all(media[b].expires_at is not None for b in BARCODES[:3])
    expires = media[BARCODES[0]].expires_at
    assert expires is not None and expires > datetime.now(UTC) + timedelta(days=6 * 365)
    # Every drive is empty again: each cartridge went back to its slot.
    assert not any(d.full for d in library.status().drives)

    target = tmp_path / "from-tape"
    all_packs: set[bytes] = set()
    for barcode in BARCODES[:3]:
        places, on_tape = _read_back(library, repo, barcode, target)
        assert on_tape == set(points)
        rows = catalog.contents(barcode)
        packs = {
            bytes.fromhex(e.pack_id): (e.file_number, e.first_record, e.record_count, e.byte_count)
            for e in rows
            if e.pack_id is not None
        }
        assert packs == places and places  # the catalog says exactly what is on it
        assert {e.point_id for e in rows if e.point_id is not None} == set(points)
        sessions = catalog.sessions(barcode)
        assert len(sessions) == 1 and set(sessions[0].points) == set(points)
        all_packs |= set(places)
    needs = point_packs(repo, points, referenced_by_points)
    assert all_packs == {p for v in needs.values() for p in v}
    first, second = catalog.sessions(BARCODES[1])[0], catalog.sessions(BARCODES[2])[0]
    assert first.continued_from == media[BARCODES[0]].media_id
    assert second.continued_from == media[BARCODES[1]].media_id
    links = [(s.continued_from, s.continues_on) for b in BARCODES[:3] for s in catalog.sessions(b)]
    ids = [media[b].media_id for b in BARCODES[:3]]
    assert links == [(None, ids[1]), (ids[0], ids[2]), (ids[1], None)]
    # an inventory's import sets the same links, whichever cartridge it reads first
    keys = Keys(repo.config.id, repo.master)
    for rebuild in (True, False):
        inventory(catalog, library, detailed=Detailed.ALL, keys=keys, rebuild=rebuild)
        again = [
            (s.continued_from, s.continues_on) for b in BARCODES[:3] for s in catalog.sessions(b)
        ]
        assert again == links
    # the pool survives a rebuild: its retention gives the imported media their expiry
    keep = timedelta(seconds=catalog.get_pool("offsite").retention_seconds)
    for medium in catalog.list_media(pool="offsite"):
        if medium.last_written is not None:
            assert medium.expires_at == medium.last_written + keep
    _restore_and_compare(source, target, tmp_path)

    # The same points again: skipped, nothing loaded or written.
    moves = library.moves
    again = copy_to_media(catalog, library, repo, points, "offsite")
    assert sorted(again.skipped) == sorted(points) and not again.cartridges
    assert library.moves == moves


def test_no_writable_medium_is_one_clear_error(
    source: Source,
    repo: Repository,
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    library = _library(tmp_path, 64 << 20, cartridges=2)
    create_pool(catalog, "offsite", "30d", None)
    with pytest.raises(MediaError) as err:
        copy_to_media(catalog, library, repo, [source.files_a], "offsite")
    assert str(err.value) == (
        "no writable medium in pool offsite: label one with "
        "'strongroom media label BARCODE --pool offsite'"
    )
    assert catalog.list_media() == [] and library.moves == 0


def test_an_expired_medium_is_recycled_only_when_online(
    source: Source,
    repo: Repository,
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    library = _library(tmp_path, 64 << 20, cartridges=1)
    create_pool(catalog, "weekly", "7d", None)
    label_media(catalog, library, repo, "weekly", [BARCODES[0]])
    copy_to_media(catalog, library, repo, [source.files_a], "weekly")
    copy_to_media(catalog, library, repo, [source.files_b], "weekly")  # appends
    medium = catalog.get_medium(BARCODES[0])
    assert medium.state is MediumState.APPENDING and medium.sessions == 2
    # Eight days later: expired; the cartridge is away (offline) -> nothing to write.
    assert medium.last_written is not None
    later = medium.last_written + timedelta(days=8)
    catalog.update_medium(BARCODES[0], online=False)
    with pytest.raises(MediaError, match="no writable medium in pool weekly"):
        copy_to_media(catalog, library, repo, [source.block], "weekly", now=lambda: later)
    assert catalog.get_medium(BARCODES[0]).state is MediumState.EXPIRED
    assert catalog.get_medium(BARCODES[0]).sessions == 2  # not recycled
    # Back in the library: recycled (same media id), the old point gone.
    catalog.update_medium(BARCODES[0], online=True)
    done = copy_to_media(catalog, library, repo, [source.block], "weekly", now=lambda: later)
    assert done.cartridges[0].recycled and done.cartridges[0].media_id == str(medium.media_id)
    fresh = catalog.get_medium(BARCODES[0])
    assert fresh.state is MediumState.APPENDING and fresh.sessions == 1
    assert {e.point_id for e in catalog.contents(BARCODES[0]) if e.point_id} == {source.block}
    assert catalog.find_point(source.files_a) == []
    kinds = [e.kind for e in catalog.list_events(barcode=BARCODES[0])]
    assert "recycled" in kinds and "expired" in kinds
    _places, on_tape = _read_back(library, repo, BARCODES[0], tmp_path / "t")
    assert on_tape == {source.block}  # the tape holds the new session only


def test_a_drive_error_mid_copy_leaves_the_catalog_as_the_tape_and_the_next_copy_succeeds(
    source: Source,
    repo: Repository,
    catalog: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points = [source.files_a, source.files_b, source.block]
    library = _library(tmp_path, _spanning_capacity(repo, points))
    create_pool(catalog, "offsite", "7y", None)
    label_media(catalog, library, repo, "offsite", BARCODES[:4])
    real = VirtualDrive.write_record
    calls = [0]
    first_cartridge = (_spanning_capacity(repo, points) // RECORD) - 8

    def failing(self: VirtualDrive, data: bytes) -> None:
        calls[0] += 1
        if calls[0] == first_cartridge + 40:  # some way into the second cartridge
            raise DriveError("drive 0: write failed (sense key 3: medium error)")
        real(self, data)

    monkeypatch.setattr(VirtualDrive, "write_record", failing)
    with pytest.raises(DriveError, match="medium error"):
        copy_to_media(catalog, library, repo, points, "offsite")
    monkeypatch.setattr(VirtualDrive, "write_record", real)
    first, second = catalog.get_medium(BARCODES[0]), catalog.get_medium(BARCODES[1])
    assert first.state is MediumState.FULL and first.sessions == 1
    assert second.state is MediumState.FREE and second.sessions == 0  # nothing recorded
    assert catalog.contents(BARCODES[1]) == [] and "medium error" in (second.error or "")
    assert not any(d.full for d in library.status().drives)  # unloaded all the same

    done = copy_to_media(catalog, library, repo, points, "offsite")
    # A point whose packs all made it to the first (recorded) cartridge is done.
    assert sorted(done.written + done.skipped) == sorted(points) and done.written
    on_first = {e.pack_id for e in catalog.contents(BARCODES[0]) if e.pack_id}
    needs = point_packs(repo, points, referenced_by_points)
    for point in points:
        whole = all(p.hex() in on_first for p in needs[point])
        assert (point in done.skipped) == whole
    assert done.cartridges[0].barcode == BARCODES[1] and done.cartridges[0].session == 2
    assert catalog.get_medium(BARCODES[1]).error is None
    # Read back every cartridge written: the dead session is skipped as truncated.
    target = tmp_path / "from-tape"
    for barcode in [BARCODES[0], *(c.barcode for c in done.cartridges)]:
        slot = library.status().where(barcode)
        assert slot is not None
        library.load(slot.address, 0)
        drive = library.drive(0)
        cartridge = read_cartridge(drive, master=repo.master)
        if barcode == BARCODES[1]:
            assert "truncated" in cartridge.sessions[0].problem
        materialize(drive, cartridge, target)
        drive.close()
        library.unload(0)
    _restore_and_compare(source, target, tmp_path)
    assert uuid.UUID(done.cartridges[0].media_id) == second.media_id
