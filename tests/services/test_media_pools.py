"""Pools, retention and labelling on the virtual library (docs/media.md,
"Pools, labels and retention")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.catalog import Catalog, Medium, MediumState
from strongroom.errors import MediaError, MediaNotFound, UsageError
from strongroom.media.format import scan
from strongroom.media.label import MediaClass, classify
from strongroom.media.session import SessionHeader
from strongroom.media.virtual import Layout, VirtualLibrary
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.services.media_pools import (
    create_pool,
    format_retention,
    label_media,
    list_pools,
    parse_retention,
    remove_pool,
)
from strongroom.storage.local import LocalBackend

PASSWORD = b"correct horse battery staple"
DAY = 86400


@pytest.fixture(scope="module")
def repo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pools") / "repo"
    Repository.init(LocalBackend(path), PASSWORD, kdf=KdfParams(1, 8192, 1)).close()
    return path


@pytest.fixture
def repo(repo_path: Path) -> Iterator[Repository]:
    opened = Repository.open(LocalBackend(repo_path), PASSWORD)
    yield opened
    opened.close()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    opened = Catalog.open(str(tmp_path / "catalog.sqlite"))
    yield opened
    opened.close()


@pytest.fixture
def library(tmp_path: Path) -> VirtualLibrary:
    layout = Layout(slots=6, drives=1, import_export=1, capacity=1 << 20, record_size=4096)
    return VirtualLibrary.create(
        "vlib",
        layout,
        root=tmp_path / "vlib",
        cartridges=["A00001L8", "A00002L8", "CLN001L1", "A00004L8", None],
    )


def _label_on_tape(library: VirtualLibrary, repo: Repository, barcode: str) -> MediaClass:
    element = library.status().where(barcode)
    assert element is not None and not element.is_drive
    library.load(element.address, 0)
    drive = library.drive(0)
    try:
        found = scan(drive)
        return classify(found.reading, repo.config.id, repo.master, barcode).media_class
    finally:
        drive.close()
        library.unload(0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7y", 7 * 365 * DAY),
        ("18m", 18 * 30 * DAY),
        ("30d", 30 * DAY),
        ("12h", 12 * 3600),
        ("2w", 14 * DAY),
        ("0", 0),
        (" 3 Y ", 3 * 365 * DAY),
        ("6mo", 180 * DAY),
    ],
)
def test_retention_units(text: str, seconds: int) -> None:
    assert parse_retention(text) == seconds


@pytest.mark.parametrize("text", ["", "y", "-1d", "1.5y", "7 years", "201y", "5x"])
def test_bad_retention_is_one_clear_line(text: str) -> None:
    with pytest.raises(UsageError, match="retention"):
        parse_retention(text)


@given(st.integers(0, 200), st.sampled_from(["y", "m", "w", "d", "h", ""]))
def test_retention_round_trips(n: int, unit: str) -> None:
    seconds = parse_retention(f"{n}{unit}")
    assert parse_retention(format_retention(seconds)) == seconds


def test_pool_create_list_remove_rules(catalog: Catalog) -> None:
    made = create_pool(catalog, "offsite", "7y", "LTO-8")
    assert made.retention_seconds == 7 * 365 * DAY and made.media_type == "LTO-8"
    with pytest.raises(UsageError, match="pool offsite already exists"):
        create_pool(catalog, "offsite", "1y", None)
    create_pool(catalog, "weekly", "30d", None)
    listed = {p.pool.name: p.as_dict() for p in list_pools(catalog)}
    assert listed["offsite"]["retention"] == "7y" and listed["weekly"]["retention"] == "30d"
    assert listed["offsite"]["media"] == 0
    catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="X1", pool="weekly"))
    with pytest.raises(MediaError, match="pool weekly still holds 1 media \\(X1\\)"):
        remove_pool(catalog, "weekly")
    remove_pool(catalog, "offsite")
    with pytest.raises(MediaNotFound, match="no pool offsite"):
        remove_pool(catalog, "offsite")
    assert [p.pool.name for p in list_pools(catalog)] == ["weekly"]


def test_label_one_then_all_new(
    catalog: Catalog, library: VirtualLibrary, repo: Repository
) -> None:
    create_pool(catalog, "offsite", "7y", None)
    moves = library.moves
    (one,) = label_media(catalog, library, repo, "offsite", ["A00002L8"])
    assert one.labelled and one.sequence == 1 and one.reason == "blank" and one.slot == 2
    assert library.moves == moves + 2  # loaded and unloaded
    medium = catalog.get_medium("A00002L8")
    assert (medium.state, medium.pool, medium.label_sequence, medium.online, medium.slot) == (
        MediumState.FREE,
        "offsite",
        1,
        True,
        2,
    )
    assert str(medium.media_id) == one.media_id and medium.repository_id == repo.config.id
    assert _label_on_tape(library, repo, "A00002L8") is MediaClass.OURS
    events = catalog.list_events(barcode="A00002L8", kind="labelled")
    assert len(events) == 1 and events[0].data["pool"] == "offsite"

    # --all-new: the unknown ones; not the cleaning cartridge, nor the one without a barcode.
    rest = label_media(catalog, library, repo, "offsite", [], all_new=True)
    assert [(r.barcode, r.sequence) for r in rest] == [("A00001L8", 2), ("A00004L8", 3)]
    assert label_media(catalog, library, repo, "offsite", [], all_new=True) == []
    assert not any(d.full for d in library.status().drives)


def test_relabel_refused_without_force(
    catalog: Catalog, library: VirtualLibrary, repo: Repository
) -> None:
    create_pool(catalog, "offsite", "7y", None)
    create_pool(catalog, "weekly", "7d", None)
    (first,) = label_media(catalog, library, repo, "offsite", ["A00001L8"])
    # Labelled, nothing written: relabelling into another pool needs no force, same media id.
    (again,) = label_media(catalog, library, repo, "weekly", ["A00001L8"])
    assert again.labelled and again.media_id == first.media_id
    assert catalog.get_medium("A00001L8").pool == "weekly"
    # With a session on it: Bareos's "already labeled" refusal.
    _fake_session(library, "A00001L8")
    (refused,) = label_media(catalog, library, repo, "offsite", ["A00001L8"])
    assert not refused.labelled and "already labelled" in refused.reason
    assert "--force" in refused.reason
    assert catalog.get_medium("A00001L8").pool == "weekly"
    (forced,) = label_media(catalog, library, repo, "offsite", ["A00001L8"], force=True)
    assert forced.labelled and forced.media_id == first.media_id
    assert catalog.get_medium("A00001L8").pool == "offsite"


def test_data_that_is_not_ours_is_refused_without_force(
    catalog: Catalog, library: VirtualLibrary, repo: Repository
) -> None:
    create_pool(catalog, "offsite", "7y", None)
    element = library.status().where("A00004L8")
    assert element is not None
    library.load(element.address, 0)
    drive = library.drive(0)
    drive.write_record(b"tar archive".ljust(4096, b"\0"))
    drive.write_filemark()
    drive.close()
    library.unload(0)
    (refused,) = label_media(catalog, library, repo, "offsite", ["A00004L8"])
    assert not refused.labelled and refused.reason.startswith("not blank (unrecognised")
    assert catalog.find_medium("A00004L8") is None
    assert label_media(catalog, library, repo, "offsite", ["A00004L8"], force=True)[0].labelled


def test_cleaning_and_unknown_barcodes_are_refused_before_any_move(
    catalog: Catalog, library: VirtualLibrary, repo: Repository
) -> None:
    create_pool(catalog, "offsite", "7y", None)
    moves = library.moves
    with pytest.raises(MediaError, match="CLN001L1 is a cleaning cartridge"):
        label_media(catalog, library, repo, "offsite", ["A00001L8", "CLN001L1"])
    with pytest.raises(MediaNotFound, match="no cartridge with barcode Z9 in library vlib"):
        label_media(catalog, library, repo, "offsite", ["Z9"])
    with pytest.raises(MediaNotFound, match="no pool nopool"):
        label_media(catalog, library, repo, "nopool", ["A00001L8"])
    assert library.moves == moves and catalog.list_media() == []


def _fake_session(library: VirtualLibrary, barcode: str) -> None:
    """Append a session header record the way the writer starts one (enough
    for a scan to count a session)."""
    element = library.status().where(barcode)
    assert element is not None
    library.load(element.address, 0)
    drive = library.drive(0)
    found = scan(drive)
    assert found.reading.label is not None
    drive.space_to_end_of_data()
    header = SessionHeader(found.reading.label.media_id, 1, b"\1" * 16, 0).encode()
    drive.write_record(header.ljust(4096, b"\0"))
    drive.write_filemark()
    drive.close()
    library.unload(0)
