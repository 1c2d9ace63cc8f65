"""Rows to records (catalog.records) and the SELECTs that produce them."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from strongroom.catalog.records import (
    ContentEntry,
    Drive,
    Event,
    Library,
    LibraryKind,
    Medium,
    MediumState,
    Placement,
    Pool,
    SessionRecord,
    Severity,
)
from strongroom.catalog.schema import (
    drives,
    libraries,
    media,
    media_contents,
    pools,
)


def media_select() -> sa.Select[Any]:
    """Media with the names of their library and pool."""
    return sa.select(
        media,
        libraries.c.name.label("library_name"),
        pools.c.name.label("pool_name"),
    ).select_from(
        media.outerjoin(libraries, media.c.library_id == libraries.c.id).outerjoin(
            pools, media.c.pool_id == pools.c.id
        )
    )


def medium(row: sa.Row[Any]) -> Medium:
    m = row._mapping
    return Medium(
        media_id=_uuid(m["media_id"]),
        barcode=m["barcode"],
        state=MediumState(m["state"]),
        online=bool(m["online"]),
        library=m["library_name"],
        slot=m["slot"],
        drive=m["drive"],
        pool=m["pool_name"],
        label_sequence=m["label_sequence"],
        labelled_at=m["labelled_at"],
        first_written=m["first_written"],
        last_written=m["last_written"],
        bytes_written=int(m["bytes_written"]),
        sessions=int(m["sessions"]),
        expires_at=m["expires_at"],
        repository_id=m["repository_id"],
        error=m["error"],
    )


def library(row: sa.Row[Any]) -> Library:
    m = row._mapping
    return Library(name=m["name"], kind=LibraryKind(m["kind"]), settings=dict(m["settings"]))


def pool(row: sa.Row[Any]) -> Pool:
    m = row._mapping
    return Pool(
        name=m["name"],
        retention_seconds=int(m["retention_seconds"]),
        media_type=m["media_type"],
        cleaning_prefix=m["cleaning_prefix"],
        notes=m["notes"],
    )


def drives_select() -> sa.Select[Any]:
    return sa.select(drives, libraries.c.name.label("library_name")).join(
        libraries, drives.c.library_id == libraries.c.id
    )


def drive(row: sa.Row[Any]) -> Drive:
    m = row._mapping
    return Drive(
        library=m["library_name"],
        address=m["address"],
        device=m["device"],
        loaded_barcode=m["loaded_barcode"],
    )


def entry(row: sa.Row[Any]) -> ContentEntry:
    m = row._mapping
    return ContentEntry(
        session=m["session"],
        file_number=m["file_number"],
        first_record=int(m["first_record"]),
        record_count=int(m["record_count"]),
        byte_count=int(m["byte_count"]),
        point_id=m["point_id"],
        pack_id=m["pack_id"],
    )


def placements_select() -> sa.Select[Any]:
    return (
        sa.select(
            media_contents,
            media.c.media_id,
            media.c.barcode,
            media.c.online,
            media.c.slot,
            libraries.c.name.label("library_name"),
        )
        .select_from(
            media_contents.join(media, media_contents.c.medium_id == media.c.id).outerjoin(
                libraries, media.c.library_id == libraries.c.id
            )
        )
        .order_by(
            media.c.online.desc(),
            media.c.barcode,
            media_contents.c.session,
            media_contents.c.file_number,
            media_contents.c.first_record,
        )
    )


def placement(row: sa.Row[Any]) -> Placement:
    m = row._mapping
    return Placement(
        media_id=_uuid(m["media_id"]),
        barcode=m["barcode"],
        online=bool(m["online"]),
        library=m["library_name"],
        slot=m["slot"],
        entry=entry(row),
    )


def session(row: sa.Row[Any]) -> SessionRecord:
    m = row._mapping
    return SessionRecord(
        number=m["number"],
        written_at=m["written_at"],
        points=tuple(str(p) for p in m["points"]),
        catalog_file=m["catalog_file"],
        bytes_written=int(m["bytes_written"]),
        continued_from=_uuid(m["continued_from"]) if m["continued_from"] else None,
        continues_on=_uuid(m["continues_on"]) if m["continues_on"] else None,
    )


def event(row: sa.Row[Any]) -> Event:
    m = row._mapping
    return Event(
        at=m["at"],
        kind=m["kind"],
        message=m["message"],
        severity=Severity(m["severity"]),
        library=m["library"],
        barcode=m["barcode"],
        data=dict(m["data"]),
        id=m["id"],
    )


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


as_uuid = _uuid  # for Catalog's queries that return bare ids
