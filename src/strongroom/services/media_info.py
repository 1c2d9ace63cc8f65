"""`media list` and `media show`: the catalog's media as plain documents.

Read only; the catalog (catalog/) answers, this module shapes its records
for the CLI's table and `--json`.
"""

from __future__ import annotations

from typing import Any

from strongroom.catalog import Catalog, Event, Medium, MediumState

# What `--free` lists: media a copy may write to (labelled, nothing on them)
# or recycle (expired), and only while they are in a library.
FREE_STATES = (MediumState.FREE, MediumState.EXPIRED)


def medium_doc(medium: Medium) -> dict[str, Any]:
    return {
        "barcode": medium.barcode,
        "media_id": str(medium.media_id),
        "state": medium.state.value,
        "online": medium.online,
        "library": medium.library,
        "slot": medium.slot,
        "drive": medium.drive,
        "pool": medium.pool,
        "label_sequence": medium.label_sequence,
        "labelled_at": medium.labelled_at,
        "first_written": medium.first_written,
        "last_written": medium.last_written,
        "bytes_written": medium.bytes_written,
        "sessions": medium.sessions,
        "expires_at": medium.expires_at,
        "repository_id": medium.repository_id,
        "error": medium.error,
    }


def list_media(
    catalog: Catalog,
    *,
    offline: bool = False,
    free: bool = False,
    pool: str | None = None,
    library: str | None = None,
) -> list[Medium]:
    """Every medium, or those offline, free (online and writable), or of a pool."""
    media = catalog.list_media(pool=pool, library=library, online=False if offline else None)
    if free:
        media = [m for m in media if m.online and m.state in FREE_STATES]
    return media


def show_medium(catalog: Catalog, key: str, events: int = 20) -> dict[str, Any]:
    """A medium with its sessions (points) and recent events; MediaNotFound."""
    medium = catalog.get_medium(key)
    sessions = catalog.sessions(medium.media_id)
    recent: list[Event] = (
        catalog.list_events(barcode=medium.barcode, limit=events) if medium.barcode else []
    )
    packs = sum(1 for e in catalog.contents(medium.media_id) if e.pack_id is not None)
    return {
        **medium_doc(medium),
        "packs": packs,
        "session_list": [
            {
                "number": s.number,
                "written_at": s.written_at,
                "points": list(s.points),
                "catalog_file": s.catalog_file,
                "bytes_written": s.bytes_written,
                "continued_from": str(s.continued_from) if s.continued_from else None,
                "continues_on": str(s.continues_on) if s.continues_on else None,
            }
            for s in sessions
        ],
        "events": [
            {"at": e.at, "kind": e.kind, "severity": e.severity.value, "message": e.message}
            for e in recent
        ],
    }
