"""Turning what a detailed inventory read off a cartridge into catalog rows.

One cartridge, one catalog transaction: the medium (found by the media id of
its label, else by its barcode, else added), its state and location, and for
one of ours every readable session with its points and pack placements
(what was recorded before for it is replaced, so importing twice is the same
as importing once). A cartridge that nothing identifies (no barcode, no
label of ours or another repository's) is not recorded: the next inventory
could not tell it from another.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from strongroom.catalog import (
    Catalog,
    ContentEntry,
    Event,
    Medium,
    MediumState,
    Pool,
    SessionRecord,
    Severity,
)
from strongroom.errors import CatalogError
from strongroom.media.format import Cartridge
from strongroom.media.label import Label, MediaClass
from strongroom.media.session import SessionCatalog

ERROR = "error"  # a drive or changer failure, beside label.MediaClass's values

_STATES = {
    MediaClass.FOREIGN.value: MediumState.FOREIGN,
    MediaClass.UNRECOGNISED.value: MediumState.UNRECOGNISED,
    MediaClass.BLANK.value: MediumState.BLANK,
    MediaClass.SUSPECT.value: MediumState.SUSPECT,
    MediaClass.DAMAGED.value: MediumState.ERROR,
    ERROR: MediumState.ERROR,
}


@dataclass
class Examined:
    """What a detailed inventory made of one cartridge."""

    media_class: str  # a MediaClass value, or "error"
    reason: str = ""
    label: Label | None = None
    cartridge: Cartridge | None = None  # ours, read and verified with the key


@dataclass
class Imported:
    medium: Medium | None  # None: nothing identifies the cartridge, not recorded
    new: bool  # the catalog did not know it before
    media_class: str  # as recorded (a clash of media ids makes it suspect)
    reason: str = ""
    sessions: int = 0
    events: list[Event] = field(default_factory=list)


def import_cartridge(
    catalog: Catalog,
    library: str,
    barcode: str | None,
    slot: int | None,
    drive: int | None,
    found: Examined,
    *,
    at: datetime | None = None,
) -> Imported:
    at = at or datetime.now(UTC)
    label = found.label
    identified = found.media_class in (MediaClass.OURS, MediaClass.FOREIGN)
    if barcode is None and not (identified and label is not None):
        return Imported(None, True, found.media_class, found.reason)
    with catalog.transaction():
        by_barcode = catalog.find_medium(barcode) if barcode is not None else None
        by_label = None
        if identified and label is not None:
            by_label = catalog.find_medium(uuid.UUID(bytes=label.media_id))
            if (
                by_label is not None
                and by_barcode is not None
                and by_label.media_id != by_barcode.media_id
            ):
                found = Examined(
                    MediaClass.SUSPECT.value,
                    f"its label's media id is in the catalog as {by_label.name}",
                    label,
                )
                identified, by_label = False, None
        row = by_label or by_barcode
        place = {"online": True, "library": library, "slot": slot, "drive": drive}
        fields: dict[str, object] = dict(place)
        if barcode is not None:
            fields["barcode"] = barcode
        if found.media_class == MediaClass.OURS and found.cartridge is not None:
            fields.update(_ours(catalog, found.cartridge))
        else:
            fields["state"] = _STATES[found.media_class]
            fields["error"] = found.reason or None
            if identified and label is not None:
                fields.update(_label_fields(label), pool=None)
        if row is None:
            media_id = (
                uuid.UUID(bytes=label.media_id)
                if identified and label is not None
                else uuid.uuid4()
            )
            catalog.add_medium(Medium(media_id=media_id))
            key: str | uuid.UUID = media_id
        else:
            key = row.media_id
        medium = catalog.update_medium(key, **fields)
        sessions = 0
        if found.media_class == MediaClass.OURS and found.cartridge is not None:
            catalog.wipe_contents(key)
            for good in found.cartridge.sessions:
                if good.catalog is not None:
                    record, entries = session_rows(good.catalog, good.raw.catalog_file)
                    medium = catalog.record_session(key, record, entries)
                    sessions += 1
            _link_spanning(catalog, medium.media_id)
            medium = _expiry(catalog, medium)
        events = [_event(library, medium, found, sessions, at)]
        catalog.add_events(events)
    return Imported(medium, row is None, found.media_class, found.reason, sessions, events)


def session_rows(
    session: SessionCatalog, catalog_file: int | None
) -> tuple[SessionRecord, list[ContentEntry]]:
    """A session catalog read off a cartridge as the catalog's records: the
    session, an entry per point (at its session catalog's file) and an entry
    per pack (at its file and first record)."""
    number = session.session
    record = SessionRecord(
        number=number,
        written_at=datetime.fromtimestamp(session.time, UTC),
        points=tuple(p.id for p in session.points),
        catalog_file=catalog_file,
        bytes_written=sum(p.records for p in session.packs) * session.record_size,
        continued_from=(
            uuid.UUID(bytes=session.continued_from) if session.continued_from else None
        ),
    )
    entries = [
        ContentEntry(
            session=number,
            file_number=catalog_file if catalog_file is not None else session.data_file + 1,
            first_record=0,
            record_count=0,
            byte_count=len(p.sealed),
            point_id=p.id,
        )
        for p in session.points
    ]
    entries += [
        ContentEntry(
            session=number,
            file_number=p.file,
            first_record=p.record,
            record_count=p.records,
            byte_count=p.length,
            pack_id=p.pack_id.hex(),
        )
        for p in session.packs
    ]
    return record, entries


def _label_fields(label: Label) -> dict[str, object]:
    return {
        "label_sequence": label.sequence,
        "labelled_at": datetime.fromtimestamp(label.labelled, UTC),
        "repository_id": label.repository_id,
    }


def _ours(catalog: Catalog, cartridge: Cartridge) -> dict[str, object]:
    good = cartridge.good
    state = MediumState.FREE
    if good:
        # As copy-to-media decides it: a copy ran out of room on it, or its
        # data ends past the early warning (the next write would change media).
        full = cartridge.near_end or any(s.deferred for s in good)
        state = MediumState.FULL if full else MediumState.APPENDING
    pool = cartridge.label.pool
    try:
        catalog.get_pool(pool)
    except CatalogError:
        catalog.add_pool(Pool(pool, notes="made by an inventory from a cartridge's label"))
    return {**_label_fields(cartridge.label), "state": state, "pool": pool, "error": None}


def _link_spanning(catalog: Catalog, media_id: uuid.UUID) -> None:
    """`continues_on` as copy-to-media recorded it: a cartridge's session
    catalog names only the cartridge it continues from, so the link is set on
    that one's last session (a cartridge a copy ran out of room on takes no
    later session), whichever of the two is read first."""
    recorded = catalog.sessions(media_id)
    for session in recorded:
        before = session.continued_from
        if before is not None and before != media_id and catalog.find_medium(before) is not None:
            earlier = catalog.sessions(before)
            if earlier:
                catalog.set_continues_on(before, earlier[-1].number, media_id)
    if recorded:
        for after in catalog.continued_by(media_id):
            if after != media_id:
                catalog.set_continues_on(media_id, recorded[-1].number, after)


def _expiry(catalog: Catalog, medium: Medium) -> Medium:
    if medium.pool is None or medium.last_written is None:
        return medium
    keep = catalog.get_pool(medium.pool).retention_seconds
    if not keep:
        return medium
    return catalog.update_medium(
        medium.media_id, expires_at=medium.last_written + timedelta(seconds=keep)
    )


def _event(library: str, medium: Medium, found: Examined, sessions: int, at: datetime) -> Event:
    kind = found.media_class
    what = {
        MediaClass.OURS.value: f"ours, {sessions} sessions imported",
        MediaClass.FOREIGN.value: "another repository's",
        MediaClass.UNRECOGNISED.value: "not strongroom's",
        MediaClass.BLANK.value: "blank",
        MediaClass.SUSPECT.value: "suspect",
        MediaClass.DAMAGED.value: "damaged label",
        ERROR: "could not be read",
    }[kind]
    why = f" ({found.reason})" if found.reason else ""
    bad = kind in (MediaClass.SUSPECT, MediaClass.DAMAGED, ERROR)
    return Event(
        at=at,
        kind="inventoried",
        message=f"{medium.name} in {library}: {what}{why}",
        severity=Severity.WARNING if bad else Severity.INFO,
        library=library,
        barcode=medium.barcode,
        data={"class": kind, "media_id": str(medium.media_id), "sessions": sessions},
    )
