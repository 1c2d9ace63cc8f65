"""The Catalog's calls as inventory, labelling, copy-to-media and restore
make them, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from strongroom.catalog import (
    Catalog,
    ContentEntry,
    Drive,
    Event,
    Library,
    LibraryKind,
    Medium,
    MediumState,
    Pool,
    SessionRecord,
    Severity,
    Sighting,
)
from strongroom.catalog.schema import media
from strongroom.errors import CatalogError, MediaNotFound

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _hex(n: int) -> str:
    return f"{n:064x}"


@contextmanager
def _statements(cat: Catalog) -> Iterator[list[str]]:
    """The SQL statements (an executemany counts once) run inside the block."""
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(str(args[2]))

    engine = cat._engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def _library(cat: Catalog, name: str = "lib1") -> str:
    cat.add_library(Library(name, LibraryKind.VIRTUAL, {"slots": 24, "drives": [0, 1]}))
    return name


def test_a_barcode_is_unique_and_missing_barcodes_never_collide(catalog: Catalog) -> None:
    catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="ABC001L8"))
    with pytest.raises(CatalogError, match="barcode ABC001L8 is already in the catalog"):
        catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="ABC001L8"))
    # the database itself enforces it (two writers racing past the check)
    with pytest.raises(CatalogError, match=r"(?i)unique"), catalog.transaction() as c:
        c.execute(
            media.insert().values(
                media_id=uuid.uuid4(),
                barcode="ABC001L8",
                state="blank",
                online=False,
                bytes_written=0,
                sessions=0,
            )
        )
    catalog.add_medium(Medium(media_id=uuid.uuid4()))
    catalog.add_medium(Medium(media_id=uuid.uuid4()))
    assert sorted(m.barcode or "-" for m in catalog.list_media()) == ["-", "-", "ABC001L8"]
    with pytest.raises(CatalogError, match="not 1-32 printable"):
        catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="BAD CODE"))


def test_a_medium_round_trips_and_updates_by_barcode_or_media_id(catalog: Catalog) -> None:
    lib = _library(catalog)
    catalog.add_pool(Pool("weekly", retention_seconds=86400 * 28, media_type="LTO-8"))
    medium = Medium(
        media_id=uuid.uuid4(),
        barcode="WK0001L8",
        state=MediumState.APPENDING,
        online=True,
        library=lib,
        slot=3,
        pool="weekly",
        label_sequence=7,
        labelled_at=T0,
        first_written=T0,
        last_written=T0 + timedelta(hours=1),
        bytes_written=5 << 40,  # beyond 32 bits
        sessions=2,
        expires_at=T0 + timedelta(days=28),
        repository_id="ab" * 16,
        error=None,
    )
    assert catalog.add_medium(medium) == medium
    assert catalog.get_medium("WK0001L8") == catalog.get_medium(medium.media_id) == medium
    changed = catalog.update_medium("WK0001L8", state=MediumState.ERROR, error="write failed")
    assert changed == dataclasses.replace(medium, state=MediumState.ERROR, error="write failed")
    relabelled = catalog.update_medium(medium.media_id, barcode=None, pool=None)
    assert (relabelled.barcode, relabelled.pool, relabelled.name) == (
        None,
        None,
        str(medium.media_id),
    )
    assert catalog.find_medium("WK0001L8") is None
    with pytest.raises(MediaNotFound, match="no medium NOPE01L8"):
        catalog.get_medium("NOPE01L8")
    with pytest.raises(CatalogError, match="no pool monthly"):
        catalog.update_medium(medium.media_id, pool="monthly")
    with pytest.raises(TypeError):
        catalog.update_medium(medium.media_id, colour="red")
    assert catalog.list_media(state=MediumState.ERROR, online=True, library=lib) == [relabelled]
    assert catalog.list_media(online=False) == []


def test_an_inventory_sets_every_location_in_one_call(catalog: Catalog) -> None:
    lib = _library(catalog)
    _library(catalog, "lib2")
    places = {"KN01L8": 1, "KN02L8": 2, "KN03L8": 3, "GONE01L8": 4}
    for barcode, slot in places.items():
        catalog.add_medium(
            Medium(media_id=uuid.uuid4(), barcode=barcode, online=True, library=lib, slot=slot)
        )
    catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="BACK01L8", online=False, library=lib))
    catalog.add_medium(
        Medium(media_id=uuid.uuid4(), barcode="ELSE01L8", online=True, library="lib2", slot=1)
    )
    catalog.set_drive(Drive(lib, 0, device="/dev/nst0"))

    changes = catalog.set_locations(
        lib,
        [
            Sighting("KN01L8", slot=2),  # swapped with KN02L8: no unique-slot clash
            Sighting("KN02L8", slot=1),
            Sighting("KN03L8", slot=3, drive=0),  # in drive 0, from slot 3
            Sighting("BACK01L8", slot=9),
            Sighting("NEW001L8", slot=10),
        ],
        drives_loaded={0: "KN03L8", 1: None},
        at=T0,
    )
    assert changes.known == ("BACK01L8", "KN01L8", "KN02L8", "KN03L8")
    assert changes.back_online == ("BACK01L8",)
    assert changes.went_offline == ("GONE01L8",)
    assert changes.unknown == ("NEW001L8",)

    where = {m.barcode: (m.online, m.library, m.slot, m.drive) for m in catalog.list_media()}
    assert where == {
        "KN01L8": (True, lib, 2, None),
        "KN02L8": (True, lib, 1, None),
        "KN03L8": (True, lib, 3, 0),
        "BACK01L8": (True, lib, 9, None),
        "GONE01L8": (False, lib, None, None),  # last seen there
        "ELSE01L8": (True, "lib2", 1, None),  # another library's: untouched
    }
    assert catalog.find_medium("NEW001L8") is None
    assert [(d.address, d.device, d.loaded_barcode) for d in catalog.list_drives(lib)] == [
        (0, "/dev/nst0", "KN03L8"),
        (1, None, None),
    ]
    got = {(e.kind, e.barcode, e.severity) for e in catalog.list_events(library=lib)}
    assert got == {("online", "BACK01L8", Severity.INFO), ("offline", "GONE01L8", Severity.WARNING)}
    with pytest.raises(CatalogError, match="seen twice"):
        catalog.set_locations(lib, [Sighting("KN01L8", slot=1), Sighting("KN01L8", slot=2)])


def test_a_500_slot_inventory_is_a_handful_of_statements(
    catalog: Catalog, record_property: pytest.RecordProperty
) -> None:
    lib = _library(catalog)
    barcodes = [f"B{n:05d}L8" for n in range(500)]
    with catalog.transaction():
        for n, barcode in enumerate(barcodes):
            catalog.add_medium(
                Medium(media_id=uuid.uuid4(), barcode=barcode, library=lib, slot=n + 1)
            )
    slots = list(range(1, 501))
    random.Random(14).shuffle(slots)
    sightings = [Sighting(b, slot=s) for b, s in zip(barcodes, slots, strict=True)]

    with _statements(catalog) as statements:
        started = time.perf_counter()
        changes = catalog.set_locations(lib, sightings, at=T0)
        first = time.perf_counter() - started
    assert len(changes.known) == len(changes.back_online) == 500
    assert len(statements) <= 10, statements
    count = len(statements)

    with _statements(catalog) as statements:
        started = time.perf_counter()
        changes = catalog.set_locations(lib, sightings[50:], at=T0)
        second = time.perf_counter() - started
    assert len(changes.went_offline) == 50 and not changes.back_online
    assert len(statements) <= 10, statements
    by_barcode = {m.barcode: m for m in catalog.list_media(library=lib)}
    assert all(not by_barcode[s.barcode].online for s in sightings[:50])
    assert all(by_barcode[s.barcode].slot == s.slot for s in sightings[50:])
    line = (
        f"{catalog.dialect}: 500-slot inventory {count} statements, {first * 1000:.0f} ms; "
        f"again with 50 gone {len(statements)} statements, {second * 1000:.0f} ms"
    )
    record_property("inventory_500", line)
    print(f"\n{line}")


def _session(cat: Catalog, barcode: str, number: int, points: list[int], packs: list[int]) -> None:
    packed = [
        ContentEntry(number, 1 + i, 0, record_count=40, byte_count=40 << 18, pack_id=_hex(p))
        for i, p in enumerate(packs)
    ]
    catalog_file = 1 + len(packs)
    listed = [
        ContentEntry(
            number, catalog_file, i * 3, record_count=3, byte_count=3 << 18, point_id=_hex(p)
        )
        for i, p in enumerate(points)
    ]
    entries = packed + listed
    record = SessionRecord(
        number,
        written_at=T0 + timedelta(hours=number),
        points=tuple(_hex(p) for p in points),
        catalog_file=catalog_file,
        bytes_written=sum(e.byte_count for e in entries),
    )
    cat.record_session(barcode, record, entries)


def test_contents_say_which_media_hold_a_point_and_a_pack(catalog: Catalog) -> None:
    lib = _library(catalog)
    catalog.add_medium(
        Medium(media_id=uuid.uuid4(), barcode="CA01L8", online=True, library=lib, slot=1)
    )
    copy = catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="CB01L8", online=False))
    _session(catalog, "CA01L8", 1, points=[1], packs=[10, 11])
    _session(catalog, "CA01L8", 2, points=[2], packs=[12])
    _session(catalog, "CB01L8", 1, points=[1], packs=[10, 11])

    a = catalog.get_medium("CA01L8")
    assert (a.sessions, a.first_written, a.last_written) == (
        2,
        T0 + timedelta(hours=1),
        T0 + timedelta(hours=2),
    )
    assert a.bytes_written == sum(s.bytes_written for s in catalog.sessions("CA01L8"))
    assert [s.points for s in catalog.sessions("CA01L8")] == [(_hex(1),), (_hex(2),)]

    found = catalog.find_pack(_hex(11))
    assert [(p.barcode, p.online, p.slot, p.entry.session, p.entry.file_number) for p in found] == [
        ("CA01L8", True, 1, 1, 2),  # online first
        ("CB01L8", False, None, 1, 2),
    ]
    assert found[1].media_id == copy.media_id
    point = catalog.find_point(bytes.fromhex(_hex(2)))
    assert [
        (p.barcode, p.entry.file_number, p.entry.first_record, p.entry.record_count) for p in point
    ] == [("CA01L8", 2, 0, 3)]
    assert catalog.find_point(_hex(99)) == []
    assert len(catalog.contents("CA01L8")) == 5

    assert catalog.wipe_contents("CB01L8") == 3
    assert [p.barcode for p in catalog.find_pack(_hex(10))] == ["CA01L8"]
    wiped = catalog.get_medium("CB01L8")
    assert (wiped.sessions, wiped.bytes_written, wiped.first_written) == (0, 0, None)
    assert catalog.sessions("CB01L8") == []

    with pytest.raises(CatalogError, match="64 lowercase hex"):
        catalog.find_pack("../../etc")
    with pytest.raises(CatalogError, match="exactly one"):
        catalog.record_session("CA01L8", SessionRecord(3, T0), [ContentEntry(3, 1, 0, 1, 1)])
    with pytest.raises(CatalogError):  # session 1 is already there: nothing half-written
        _session(catalog, "CA01L8", 1, points=[5], packs=[50])
    assert catalog.find_pack(_hex(50)) == [] and catalog.get_medium("CA01L8").sessions == 2


def test_expired_media_in_the_library(catalog: Catalog) -> None:
    lib = _library(catalog)
    _library(catalog, "lib2")
    now = T0 + timedelta(days=100)
    cases = {
        "EX01L8": (MediumState.EXPIRED, None, True, lib),
        "EX02L8": (MediumState.FULL, T0, True, lib),  # retention over
        "EX03L8": (MediumState.APPENDING, now, True, lib),  # over at this very instant
        "KP01L8": (MediumState.FULL, now + timedelta(seconds=1), True, lib),
        "KP02L8": (MediumState.FULL, T0, False, lib),  # offline
        "KP03L8": (MediumState.SUSPECT, T0, True, lib),
        "KP04L8": (MediumState.EXPIRED, None, True, "lib2"),
    }
    for slot, (barcode, (state, expires, online, library)) in enumerate(cases.items(), 1):
        catalog.add_medium(
            Medium(media_id=uuid.uuid4(), barcode=barcode, state=state, expires_at=expires,
                   online=online, library=library, slot=slot if online else None)
        )  # fmt: skip
    expired = catalog.expired_in_library(lib, now)
    assert [m.barcode for m in expired] == ["EX01L8", "EX02L8", "EX03L8"]  # marked first
    anywhere = catalog.expired_in_library(None, now)
    assert [m.barcode for m in anywhere] == ["EX01L8", "KP04L8", "EX02L8", "EX03L8"]


def test_pools(catalog: Catalog) -> None:
    catalog.add_pool(Pool("daily", retention_seconds=7 * 86400))
    catalog.add_pool(
        Pool("yearly", 366 * 86400, media_type="LTO-9", cleaning_prefix="CLX", notes="vault")
    )
    with pytest.raises(CatalogError, match="pool daily already exists"):
        catalog.add_pool(Pool("daily"))
    with pytest.raises(CatalogError, match="must not be negative"):
        catalog.add_pool(Pool("broken", retention_seconds=-1))
    assert catalog.get_pool("yearly") == Pool("yearly", 366 * 86400, "LTO-9", "CLX", "vault")
    assert catalog.get_pool("daily").cleaning_prefix == "CLN"
    renamed = catalog.update_pool("daily", name="nightly", retention_seconds=3 * 86400)
    assert catalog.list_pools() == [renamed, catalog.get_pool("yearly")]
    catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="PL01L8", pool="nightly"))
    with pytest.raises(CatalogError, match="pool nightly still holds 1 media"):
        catalog.remove_pool("nightly")
    catalog.remove_pool("yearly")
    assert [p.name for p in catalog.list_pools()] == ["nightly"]
    assert catalog.get_medium("PL01L8").pool == "nightly"


def test_events_and_libraries(catalog: Catalog) -> None:
    lib = _library(catalog)
    assert catalog.get_library(lib) == Library(
        lib, LibraryKind.VIRTUAL, {"slots": 24, "drives": [0, 1]}
    )
    with pytest.raises(CatalogError, match="library lib1 already exists"):
        _library(catalog)
    first = catalog.add_event(
        Event(T0, "new-medium", "NEW001L8 imported", library=lib, barcode="NEW001L8",
              data={"state": "foreign", "points": [_hex(1)]})
    )  # fmt: skip
    assert first.id is not None
    catalog.add_events(
        [
            Event(T0 + timedelta(minutes=m), "inventory", f"inventory {m}", library=lib)
            for m in range(3)
        ]
    )
    assert [e.message for e in catalog.list_events(kind="inventory", limit=2)] == [
        "inventory 2",
        "inventory 1",
    ]
    assert catalog.list_events(barcode="NEW001L8") == [first]
    assert len(catalog.list_events(since=T0 + timedelta(minutes=1))) == 2
    catalog.add_medium(
        Medium(media_id=uuid.uuid4(), barcode="LB01L8", online=True, library=lib, slot=1)
    )
    catalog.remove_library(lib)
    assert catalog.list_libraries() == []
    assert (catalog.get_medium("LB01L8").online, catalog.get_medium("LB01L8").library) == (
        False,
        None,
    )
    assert len(catalog.list_events(library=lib)) == 4  # the history stays


def test_a_transaction_commits_all_or_nothing(catalog: Catalog) -> None:
    with pytest.raises(CatalogError), catalog.transaction():
        catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="TX01L8"))
        catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="TX01L8"))
    assert catalog.list_media() == []
    with catalog.transaction():
        catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="TX01L8"))
        catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="TX02L8"))
    assert len(catalog.list_media()) == 2


def test_forgetting_media_for_a_rebuild(catalog: Catalog) -> None:
    lib = _library(catalog)
    _library(catalog, "lib2")
    catalog.add_pool(Pool("p"))
    catalog.add_medium(
        Medium(media_id=uuid.uuid4(), barcode="FG01L8", library=lib, slot=1, pool="p")
    )
    catalog.add_medium(Medium(media_id=uuid.uuid4(), barcode="FG02L8", library="lib2", slot=1))
    _session(catalog, "FG01L8", 1, points=[1], packs=[10])
    catalog.set_drive(Drive(lib, 0, loaded_barcode="FG01L8"))
    catalog.add_event(Event(T0, "labelled", "FG01L8 labelled", barcode="FG01L8"))

    assert catalog.forget_media(lib) == 1
    assert [m.barcode for m in catalog.list_media()] == ["FG02L8"]
    assert catalog.find_point(_hex(1)) == [] and catalog.find_pack(_hex(10)) == []
    assert catalog.list_drives(lib)[0].loaded_barcode is None
    assert catalog.forget_media() == 1 and catalog.list_media() == []
    assert [p.name for p in catalog.list_pools()] == ["p"]
    assert len(catalog.list_libraries()) == 2 and len(catalog.list_events()) == 1


def test_forgetting_only_some_media_and_linking_spanning_sessions(catalog: Catalog) -> None:
    lib = _library(catalog)
    first, second, vaulted = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    catalog.add_medium(Medium(media_id=first, barcode="SP01L8", library=lib, slot=1))
    catalog.add_medium(Medium(media_id=second, library=lib, slot=2))  # no barcode
    catalog.add_medium(Medium(media_id=vaulted, barcode="SP03L8", library=lib))
    _session(catalog, "SP01L8", 1, points=[1], packs=[10])
    catalog.record_session(second, SessionRecord(1, T0, (_hex(1),), 2, 0, continued_from=first), [])
    catalog.set_continues_on("SP01L8", 1, second)
    assert catalog.sessions(first)[0].continues_on == second
    assert catalog.continued_by(first) == [second] and catalog.continued_by(second) == []
    with pytest.raises(CatalogError, match="no session 2"):
        catalog.set_continues_on(first, 2, second)

    # a rebuild forgets what is in the library (a barcode, a media id; unknown keys skipped)
    assert catalog.forget_media(lib, only=["SP01L8", second, "NOPE01L8", uuid.uuid4()]) == 2
    assert [m.barcode for m in catalog.list_media()] == ["SP03L8"]
    assert catalog.find_point(_hex(1)) == []
