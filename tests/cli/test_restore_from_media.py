"""`strongroom restore POINT` for points that live only on media: written to
a virtual library's cartridges (media/writer.write_session), recorded in the
catalog, forgotten and pruned from the repository, then restored by the CLI
byte-exactly (docs/media.md, "Restoring from media")."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from strongroom.catalog import (
    Catalog,
    ContentEntry,
    Library,
    LibraryKind,
    Medium,
    MediumState,
    Pool,
    SessionRecord,
)
from strongroom.media.label import write_label
from strongroom.media.virtual import Layout, VirtualLibrary
from strongroom.media.writer import point_packs, write_session
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.services.walk import referenced_by_points
from strongroom.storage.local import LocalBackend
from tests.catalog.conftest import pg_cluster  # noqa: F401  (the PostgreSQL fixture)
from tests.helpers.cli import FAST_KDF, PASSWORD, CliResult, run_cli
from tests.helpers.compare import walk_differences
from tests.helpers.pg_cluster import PORT, Cluster

BARCODES = ["A00001L8", "A00002L8", "A00003L8"]


@dataclass
class Source:
    repo: Path
    tree: Path  # the files point, as restored from disk before it was pruned
    image: Path
    files: str
    block: str


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A repository with a files point and an image point (made once, copied per test)."""
    base = tmp_path_factory.mktemp("media-restore")
    repo = base / "repo"
    Repository.init(LocalBackend(repo), PASSWORD.encode(), kdf=KdfParams(1, 8192, 1)).close()
    env = _env(base / "home", repo, None)
    rng = random.Random(1414)
    tree = base / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "big.bin").write_bytes(rng.randbytes(1_200_000))
    (tree / "sub" / "small.txt").write_bytes(b"from the tape\n")
    (tree / "empty").write_bytes(b"")
    os.symlink("sub/small.txt", tree / "link")
    os.chmod(tree / "sub" / "small.txt", 0o640)
    files = _backup(env, str(tree))
    snapshot = base / "snapshot"
    assert run_cli(["restore", files, "--target", str(snapshot)], env).rc == 0
    image = base / "disk.raw"
    with image.open("wb") as f:
        f.write(rng.randbytes(1 << 20))
        f.seek(3 << 20)
        f.write(rng.randbytes(512 << 10))
    block = _backup(env, "--image", str(image))
    return Source(repo, snapshot, image, files, block)


def _env(home: Path, repo: Path, catalog: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "STRONGROOM_KDF": FAST_KDF,
        "STRONGROOM_PASSWORD": PASSWORD,
        "STRONGROOM_REPO": str(repo),
    }
    env.pop("STRONGROOM_CATALOG", None)
    if catalog is not None:
        env["STRONGROOM_CATALOG"] = catalog
    return env


def _backup(env: dict[str, str], *args: str) -> str:
    result = run_cli(["backup", *args, "--json"], env)
    assert result.rc == 0, result.err
    return str(result.summary()["point_id"])


@dataclass
class World:
    """One test's repository copy, data folder, virtual library and catalog."""

    source: Source
    base: Path
    env: dict[str, str]
    catalog_url: str

    @property
    def repo(self) -> Path:
        return Path(self.env["STRONGROOM_REPO"])

    @property
    def library(self) -> VirtualLibrary:
        return VirtualLibrary("vlib", self.base / "home/data/strongroom/libraries/vlib")

    def cli(self, *args: str) -> CliResult:
        return run_cli(list(args), self.env)

    def write(
        self,
        points: list[str],
        barcodes: list[str],
        *,
        label_as: str | None = None,
        parts: list[list[bytes]] | None = None,
    ) -> None:
        """Write `points` as one copy over `barcodes` (their packs split evenly
        over them, or as `parts` says: a spanning copy) and record it in the
        catalog."""
        repo = Repository.open(LocalBackend(self.repo), PASSWORD.encode())
        catalog = Catalog.open(self.catalog_url)
        library = self.library
        try:
            needs = point_packs(repo, points, referenced_by_points)
            packs = sorted({p for ps in needs.values() for p in ps})
            assert len(packs) >= len(barcodes)
            share = -(-len(packs) // len(barcodes))
            job, previous = uuid.uuid4().bytes, None
            for sequence, barcode in enumerate(barcodes, 1):
                element = library.status().where(barcode)
                assert element is not None
                library.load(element.address, 0)
                drive = library.drive(0)
                label = write_label(
                    drive, repo.master, repo.config.id, label_as or barcode, "offsite", sequence
                )
                part = (
                    parts[sequence - 1]
                    if parts is not None
                    else packs[(sequence - 1) * share : sequence * share]
                )
                written = write_session(
                    drive,
                    repo,
                    points,
                    reach=referenced_by_points,
                    packs=part,
                    job=job,
                    continued_from=previous,
                )
                drive.close()
                library.unload(0)
                assert [p.pack_id for p in written.packs] == part
                media_id = uuid.UUID(bytes=label.media_id)
                catalog.add_medium(
                    Medium(
                        media_id,
                        barcode,
                        MediumState.APPENDING,
                        online=True,
                        library="vlib",
                        slot=element.address,
                        pool="offsite",
                        label_sequence=sequence,
                        repository_id=repo.config.id,
                    )
                )
                contents = [
                    ContentEntry(written.session, written.catalog_file, 0, 1, 0, point_id=p)
                    for p in points
                ] + [
                    ContentEntry(
                        written.session,
                        p.file,
                        p.record,
                        p.records,
                        p.length,
                        pack_id=p.pack_id.hex(),
                    )
                    for p in written.packs
                ]
                catalog.record_session(
                    media_id,
                    SessionRecord(
                        written.session,
                        datetime.now(UTC),
                        tuple(points),
                        written.catalog_file,
                        written.bytes_written,
                        continued_from=None if previous is None else uuid.UUID(bytes=previous),
                    ),
                    contents,
                )
                previous = label.media_id
        finally:
            catalog.close()
            repo.close()

    def prune(self, *points: str) -> None:
        for point in points:
            assert self.cli("forget", point).rc == 0
        result = self.cli("prune")
        assert result.rc == 0, result.err

    def restore(self, point: str, target: Path, *extra: str) -> CliResult:
        return self.cli("restore", point, "--target", str(target), *extra)


def _world(source: Source, base: Path, catalog_url: str | None = None) -> World:
    repo = base / "repo"
    shutil.copytree(source.repo, repo)
    url = catalog_url or str(base / "catalog.sqlite")
    env = _env(base / "home", repo, url)
    VirtualLibrary.create(
        "vlib",
        Layout(slots=4, drives=1, import_export=1, capacity=64 << 20, record_size=64 << 10),
        root=base / "home/data/strongroom/libraries/vlib",
        cartridges=BARCODES,
    )
    with Catalog.open(url) as catalog:
        catalog.add_library(Library("vlib", LibraryKind.VIRTUAL))
        catalog.add_pool(Pool("offsite"))
    return World(source, base, env, url)


@pytest.fixture
def world(source: Source, tmp_path: Path) -> World:
    return _world(source, tmp_path)


def _same_tree(source: Source, target: Path) -> None:
    assert walk_differences(source.tree, target, check_atime=False, check_root=False) == []


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _staging(world: World) -> list[Path]:
    folder = world.base / "home/data/strongroom/staging"
    return list(folder.iterdir()) if folder.exists() else []


def test_pruned_points_restore_from_one_cartridge(world: World) -> None:
    src = world.source
    world.write([src.files, src.block], ["A00001L8"])
    disk = world.cli("--json", "restore", src.files, "--target", str(world.base / "disk"))
    assert disk.rc == 0, disk.err
    world.prune(src.files, src.block)
    assert not any((world.repo / "points").iterdir())

    result = world.restore(src.files[:10], world.base / "files", "--json")
    assert result.rc == 0, result.err
    _same_tree(src, world.base / "files")
    # The same point id and the same summary as from the disk repository.
    assert result.summary() == disk.summary()
    assert "A00001L8 (pool offsite, sequence 1): online in vlib" in result.err
    image = world.restore(src.block, world.base / "disk.raw")
    assert image.rc == 0, image.err
    assert _sha(world.base / "disk.raw") == _sha(src.image)
    # The staging folder is gone, the cartridge back in its slot, the drive empty.
    assert _staging(world) == []
    status = world.library.status()
    where = status.where("A00001L8")
    assert where is not None and (where.kind, where.address) == ("slot", 1)
    assert not status.drive(0).full
    with Catalog.open(world.catalog_url) as catalog:
        assert [e.kind for e in catalog.list_events(barcode="A00001L8")] == ["restore-read"] * 2


def test_a_spanning_copy_reads_both_cartridges_in_order(world: World) -> None:
    src = world.source
    world.write([src.files], ["A00002L8", "A00003L8"])
    world.prune(src.files)
    result = world.restore(src.files, world.base / "files", "--keep-staging")
    assert result.rc == 0, result.err
    _same_tree(src, world.base / "files")
    lines = result.err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("read A00002L8"))
    second = next(i for i, line in enumerate(lines) if line.startswith("read A00003L8"))
    assert first < second
    (kept,) = _staging(world)
    assert f"staging folder kept: {kept}" in result.err
    assert (kept / "points" / src.files).exists()
    assert oct(kept.stat().st_mode & 0o777) == "0o700"


def test_a_spanning_copy_skips_the_cartridges_holding_none_of_the_points_packs(
    world: World,
) -> None:
    src = world.source
    repo = Repository.open(LocalBackend(world.repo), PASSWORD.encode())
    try:
        needs = point_packs(repo, [src.files, src.block], referenced_by_points)
    finally:
        repo.close()
    # the point with two packs or more spans the first and the last cartridge;
    # the middle one holds only the other point's packs
    wanted, other = sorted(needs, key=lambda p: -len(needs[p]))
    mine = sorted(needs[wanted])
    theirs = sorted(set(needs[other]) - set(mine))
    assert len(mine) >= 2 and theirs
    world.write([src.files, src.block], BARCODES, parts=[mine[:1], theirs, mine[1:]])
    world.prune(src.files, src.block)
    target = world.base / ("files" if wanted == src.files else "disk.raw")
    result = world.restore(wanted, target)
    assert result.rc == 0, result.err
    reads = [line.split(":")[0] for line in result.err.splitlines() if line.startswith("read ")]
    assert reads == ["read A00001L8", "read A00003L8"]
    if wanted == src.files:
        _same_tree(src, target)
    else:
        assert _sha(target) == _sha(src.image)
    with Catalog.open(world.catalog_url) as catalog:
        assert catalog.list_events(barcode="A00002L8", kind="restore-read") == []


def test_an_offline_cartridge_is_named_then_restored_once_imported(world: World) -> None:
    src = world.source
    world.write([src.files], ["A00001L8", "A00002L8"])
    world.prune(src.files)
    assert world.cli("library", "export", "vlib", "A00002L8").rc == 0
    moves = world.library.moves
    refused = world.restore(src.files, world.base / "files")
    assert refused.rc == 1
    assert refused.err.splitlines()[-1].endswith(
        f"point {src.files[:8]} needs offline cartridges: A00002L8 (insert them in vlib)"
    )
    assert "A00002L8 (pool offsite, sequence 2): OFFLINE" in refused.err
    assert not (world.base / "files").exists()
    assert world.library.moves == moves  # nothing was loaded

    assert world.cli("library", "import", "vlib", "A00002L8").rc == 0  # in the mail slot
    done = world.restore(src.files, world.base / "files")
    assert done.rc == 0, done.err
    _same_tree(src, world.base / "files")
    assert world.library.status().slot(5).barcode == "A00002L8"  # put back where it was


def test_from_media_needs_no_catalog(world: World) -> None:
    src = world.source
    world.write([src.files, src.block], ["A00001L8"])
    world.prune(src.files, src.block)
    Path(world.catalog_url).unlink()
    result = world.restore(src.files[:12], world.base / "files", "--from-media", "A00001L8")
    assert result.rc == 0, result.err
    _same_tree(src, world.base / "files")
    assert not Path(world.catalog_url).exists()  # not recreated
    # Without --from-media and without a catalog: one clear line.
    unknown = world.restore(src.block, world.base / "disk.raw")
    assert unknown.rc != 0 and "no media catalog" in unknown.err.strip().splitlines()[-1]
    # A spanning copy given only its first cartridge.
    assert not (world.base / "disk.raw").exists()


def test_errors_unknown_point_suspect_label_damaged_record(world: World) -> None:
    src = world.source
    unknown = world.restore("abcdef12", world.base / "t1")
    assert unknown.rc != 0
    assert unknown.err.strip().splitlines()[-1].endswith("nor in the media catalog")

    world.write([src.files], ["A00001L8"], label_as="Z99999L8")
    world.prune(src.files)
    suspect = world.restore(src.files, world.base / "t2")
    assert suspect.rc != 0 and not (world.base / "t2").exists()
    assert "cartridge A00001L8 is labelled Z99999L8 (suspect)" in suspect.err
    assert world.library.status().slot(1).barcode == "A00001L8"  # unloaded again


def test_a_damaged_record_names_the_cartridge(world: World) -> None:
    src = world.source
    world.write([src.files], ["A00001L8"])
    world.prune(src.files)
    tapes = (world.base / "home/data/strongroom/libraries/vlib/cartridges").glob("*.tape")
    big = max(tapes, key=lambda p: p.stat().st_size)  # the one written
    assert big.stat().st_size > 1 << 20
    with big.open("r+b") as f:
        f.seek(big.stat().st_size // 3)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = world.restore(src.files, world.base / "files")
    assert result.rc != 0 and not (world.base / "files").exists()
    last = result.err.strip().splitlines()[-1]
    assert "cartridge A00001L8" in last and "damaged" in last, last
    assert _staging(world) == []


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:  # noqa: F811
    name = f"restore_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@/{name}?host={pg_cluster.socket_dir}&port={PORT}"
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.xdist_group("postgresql")
def test_the_catalog_on_postgresql(source: Source, tmp_path: Path, pg_url: str) -> None:
    world = _world(source, tmp_path, pg_url)
    world.write([source.files], ["A00002L8", "A00003L8"])
    world.prune(source.files)
    result = world.restore(source.files[:8], world.base / "files")
    assert result.rc == 0, result.err
    _same_tree(source, world.base / "files")
