"""`Catalog`: the one object inventory, labelling, copy-to-media, restore and
the backup server use to read and write the catalog database.

Contract:
- `Catalog.open(url)` connects, migrates (catalog.migrate) and returns; a
  database it cannot use raises CatalogError with one line naming it (its
  password masked).
- every method is one transaction of its own, or joins the caller's
  `with catalog.transaction():` (same thread), so several calls commit
  together or not at all;
- values in and out are catalog.records dataclasses, never rows;
- a failed statement raises CatalogError (rolled back); a medium, library or
  pool that does not exist raises MediaNotFound / CatalogError.
A Catalog may be shared by threads (each gets its own connection); it is
not meant to be shared across fork().
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic.util.exc import CommandError

from strongroom.catalog import convert
from strongroom.catalog.accounts import AccountsMixin
from strongroom.catalog.engine import create_engine, masked, one_line, parse_url
from strongroom.catalog.jobs import JobsMixin
from strongroom.catalog.machines import MachinesMixin
from strongroom.catalog.migrate import upgrade
from strongroom.catalog.point_memos import PointMemosMixin
from strongroom.catalog.records import (
    ContentEntry,
    Drive,
    Event,
    Library,
    LocationChanges,
    Medium,
    MediumKey,
    MediumState,
    Placement,
    Pool,
    SessionRecord,
    Severity,
    Sighting,
    check_barcode,
    check_name,
    hex_id,
)
from strongroom.catalog.schema import (
    drives,
    events,
    libraries,
    media,
    media_contents,
    pools,
    sessions,
)
from strongroom.errors import CatalogError, MediaNotFound

_CHUNK = 500  # bound parameters per IN (...): far below SQLite's and psycopg's limits
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")
_MEDIUM_FIELDS = {f.name for f in dataclasses.fields(Medium)} - {"media_id"}


def _now() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class Catalog(AccountsMixin, MachinesMixin, JobsMixin, PointMemosMixin):
    def __init__(self, engine: sa.Engine, url: sa.URL) -> None:
        self._engine = engine
        self._url = url
        self.where = masked(url)  # how messages name this catalog
        self._local = threading.local()

    # --- lifetime ------------------------------------------------------------

    @classmethod
    def open(cls, url: str | None = None) -> Catalog:
        """Open the catalog at `url` (None: the embedded SQLite default),
        created or upgraded to this strongroom's schema."""
        parsed = parse_url(url)
        engine = create_engine(parsed)
        where = masked(parsed)
        try:
            with engine.connect() as connection:
                upgrade(connection, where)
        except CatalogError:
            engine.dispose()
            raise
        except (sa.exc.SQLAlchemyError, CommandError, OSError) as err:
            engine.dispose()
            raise CatalogError(f"catalog {where}: {one_line(err, parsed)}") from None
        return cls(engine, parsed)

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One transaction for every catalog call inside the block (this
        thread); nested blocks join the outer one."""
        current: sa.Connection | None = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        try:
            with self._engine.begin() as connection:
                self._local.connection = connection
                try:
                    yield connection
                finally:
                    self._local.connection = None
        except sa.exc.SQLAlchemyError as err:
            raise CatalogError(f"catalog {self.where}: {one_line(err, self._url)}") from None

    # --- libraries and drives ------------------------------------------------

    def add_library(self, library: Library) -> Library:
        check_name(library.name, "library")
        with self.transaction() as c:
            if c.scalar(sa.select(libraries.c.id).where(libraries.c.name == library.name)):
                raise CatalogError(f"catalog: library {library.name} already exists")
            c.execute(
                libraries.insert().values(
                    name=library.name, kind=str(library.kind), settings=dict(library.settings)
                )
            )
        return library

    def get_library(self, name: str) -> Library:
        with self.transaction() as c:
            row = c.execute(sa.select(libraries).where(libraries.c.name == name)).first()
        if row is None:
            raise CatalogError(f"catalog: no library {name}")
        return convert.library(row)

    def list_libraries(self) -> list[Library]:
        with self.transaction() as c:
            rows = c.execute(sa.select(libraries).order_by(libraries.c.name)).all()
        return [convert.library(r) for r in rows]

    def remove_library(self, name: str) -> None:
        """Its drives go; its media stay (offline, no library)."""
        with self.transaction() as c:
            library_id = self._library_id(c, name)
            c.execute(
                media.update()
                .where(media.c.library_id == library_id)
                .values(online=False, slot=None, drive=None)
            )
            c.execute(libraries.delete().where(libraries.c.id == library_id))

    def set_drive(self, drive: Drive) -> Drive:
        """Add the drive or update its device and loaded barcode."""
        if drive.loaded_barcode is not None:
            check_barcode(drive.loaded_barcode)
        with self.transaction() as c:
            library_id = self._library_id(c, drive.library)
            values = {"device": drive.device, "loaded_barcode": drive.loaded_barcode}
            done = c.execute(
                drives.update()
                .where(drives.c.library_id == library_id, drives.c.address == drive.address)
                .values(**values)
            )
            if not done.rowcount:
                c.execute(
                    drives.insert().values(library_id=library_id, address=drive.address, **values)
                )
        return drive

    def list_drives(self, library: str) -> list[Drive]:
        with self.transaction() as c:
            library_id = self._library_id(c, library)
            rows = c.execute(
                convert.drives_select()
                .where(drives.c.library_id == library_id)
                .order_by(drives.c.address)
            ).all()
        return [convert.drive(r) for r in rows]

    # --- pools ---------------------------------------------------------------

    def add_pool(self, pool: Pool) -> Pool:
        check_name(pool.name, "pool")
        with self.transaction() as c:
            if c.scalar(sa.select(pools.c.id).where(pools.c.name == pool.name)):
                raise CatalogError(f"catalog: pool {pool.name} already exists")
            c.execute(pools.insert().values(**_pool_values(pool)))
        return pool

    def get_pool(self, name: str) -> Pool:
        with self.transaction() as c:
            row = c.execute(sa.select(pools).where(pools.c.name == name)).first()
        if row is None:
            raise CatalogError(f"catalog: no pool {name}")
        return convert.pool(row)

    def list_pools(self) -> list[Pool]:
        with self.transaction() as c:
            rows = c.execute(sa.select(pools).order_by(pools.c.name)).all()
        return [convert.pool(r) for r in rows]

    def update_pool(self, current: str, /, **changes: Any) -> Pool:
        """`changes`: Pool fields (a new `name` renames it)."""
        with self.transaction() as c:
            pool = dataclasses.replace(self.get_pool(current), **changes)
            check_name(pool.name, "pool")
            c.execute(pools.update().where(pools.c.name == current).values(**_pool_values(pool)))
        return pool

    def remove_pool(self, name: str) -> None:
        """Refused while media belong to it."""
        with self.transaction() as c:
            pool_id = self._pool_id(c, name)
            held = c.scalar(sa.select(sa.func.count()).where(media.c.pool_id == pool_id))
            if held:
                raise CatalogError(f"catalog: pool {name} still holds {held} media")
            c.execute(pools.delete().where(pools.c.id == pool_id))

    # --- media ---------------------------------------------------------------

    def add_medium(self, medium: Medium) -> Medium:
        """Record a medium; its barcode and media id must be new."""
        with self.transaction() as c:
            if medium.barcode is not None and self.find_medium(medium.barcode) is not None:
                raise CatalogError(f"catalog: barcode {medium.barcode} is already in the catalog")
            if self.find_medium(medium.media_id) is not None:
                raise CatalogError(f"catalog: media id {medium.media_id} is already in the catalog")
            values = self._medium_values(c, dataclasses.asdict(medium))
            c.execute(media.insert().values(media_id=medium.media_id, **values))
        return self.get_medium(medium.media_id)

    def find_medium(self, key: MediumKey) -> Medium | None:
        with self.transaction() as c:
            row = c.execute(convert.media_select().where(_key_clause(key))).first()
        return convert.medium(row) if row is not None else None

    def get_medium(self, key: MediumKey) -> Medium:
        found = self.find_medium(key)
        if found is None:
            raise MediaNotFound(f"no medium {key} in the catalog")
        return found

    def update_medium(self, key: MediumKey, **changes: Any) -> Medium:
        """Change some of a medium's fields (Medium's names; library and pool
        by name) in one UPDATE; returns the medium as stored."""
        unknown = set(changes) - _MEDIUM_FIELDS
        if unknown:
            raise TypeError(f"update_medium: no field(s) {', '.join(sorted(unknown))}")
        with self.transaction() as c:
            medium_id = self._medium_id(c, key)
            values = self._medium_values(c, changes)
            c.execute(media.update().where(media.c.id == medium_id).values(**values))
            row = c.execute(convert.media_select().where(media.c.id == medium_id)).one()
        return convert.medium(row)

    def list_media(
        self,
        *,
        library: str | None = None,
        pool: str | None = None,
        state: MediumState | None = None,
        online: bool | None = None,
    ) -> list[Medium]:
        query = convert.media_select()
        if library is not None:
            query = query.where(libraries.c.name == library)
        if pool is not None:
            query = query.where(pools.c.name == pool)
        if state is not None:
            query = query.where(media.c.state == str(state))
        if online is not None:
            query = query.where(media.c.online == online)
        with self.transaction() as c:
            rows = c.execute(query.order_by(media.c.barcode, media.c.id)).all()
        return [convert.medium(r) for r in rows]

    def expired_in_library(self, library: str | None, now: datetime | None = None) -> list[Medium]:
        """Online media (of `library`, or any) that may be recycled: marked
        expired (first), then full/appending with their retention over, oldest
        first."""
        now = now or _now()
        query = convert.media_select().where(
            media.c.online.is_(True),
            sa.or_(
                media.c.state == str(MediumState.EXPIRED),
                sa.and_(
                    media.c.state.in_([str(MediumState.FULL), str(MediumState.APPENDING)]),
                    media.c.expires_at.is_not(None),
                    media.c.expires_at <= now,
                ),
            ),
        )
        if library is not None:
            query = query.where(libraries.c.name == library)
        with self.transaction() as c:
            order = (sa.nulls_first(media.c.expires_at.asc()), media.c.barcode)
            rows = c.execute(query.order_by(*order)).all()
        return [convert.medium(r) for r in rows]

    def set_locations(
        self,
        library: str,
        seen: Iterable[Sighting],
        *,
        drives_loaded: Mapping[int, str | None] | None = None,
        at: datetime | None = None,
    ) -> LocationChanges:
        """Record one inventory of `library` in a handful of statements: the
        known media seen are online there at their slot (or drive); media
        that were in it and are not seen go offline; an event for each medium
        that came back or left. `drives_loaded`: drive address -> barcode
        loaded (None: empty), for the drives table. Barcodes not in the
        catalog are returned as `unknown`, untouched."""
        sightings: dict[str, Sighting] = {}
        for s in seen:
            if sightings.setdefault(check_barcode(s.barcode), s) is not s:
                raise CatalogError(f"catalog: barcode {s.barcode} seen twice in {library}")
        at = at or _now()
        with self.transaction() as c:
            library_id = self._library_id(c, library)
            found: dict[str, tuple[int, bool]] = {}
            for chunk in _chunks(sorted(sightings)):
                query = sa.select(media.c.id, media.c.barcode, media.c.online)
                for row in c.execute(query.where(media.c.barcode.in_(chunk))):
                    found[row.barcode] = (row.id, bool(row.online))
            here = c.execute(
                sa.select(media.c.id, media.c.barcode, media.c.media_id).where(
                    media.c.library_id == library_id, media.c.online.is_(True)
                )
            ).all()
            gone = [(r.id, r.barcode) for r in here if r.barcode not in sightings]
            gone_ids = sorted(r.media_id for r in here if r.barcode is None)
            c.execute(
                media.update().where(media.c.library_id == library_id).values(slot=None, drive=None)
            )
            if found:
                c.execute(
                    media.update()
                    .where(media.c.id == sa.bindparam("_id"))
                    .values(
                        online=True,
                        library_id=library_id,
                        slot=sa.bindparam("_slot"),
                        drive=sa.bindparam("_drive"),
                    ),
                    [
                        {"_id": i, "_slot": sightings[b].slot, "_drive": sightings[b].drive}
                        for b, (i, _) in found.items()
                    ],
                )
            for chunk in _chunks([i for i, _ in gone]):
                c.execute(media.update().where(media.c.id.in_(chunk)).values(online=False))
            changes = LocationChanges(
                known=tuple(sorted(found)),
                back_online=tuple(sorted(b for b, (_, was) in found.items() if not was)),
                went_offline=tuple(sorted(b for _, b in gone if b is not None)),
                unknown=tuple(sorted(set(sightings) - set(found))),
                went_offline_ids=tuple(gone_ids),
            )
            self.add_events(_location_events(library, changes, sightings, at))
            if drives_loaded is not None:
                self._set_drives_loaded(c, library_id, drives_loaded)
        return changes

    # --- sessions and contents ----------------------------------------------

    def record_session(
        self, key: MediumKey, session: SessionRecord, contents: Sequence[ContentEntry]
    ) -> Medium:
        """A session written to a medium and what it holds, with the medium's
        counters (sessions, bytes, first/last written), in one transaction."""
        rows = [_entry_values(e, session.number) for e in contents]
        points = [hex_id(p, "point") for p in session.points]
        with self.transaction() as c:
            medium_id = self._medium_id(c, key)
            c.execute(
                sessions.insert().values(
                    medium_id=medium_id,
                    number=session.number,
                    written_at=session.written_at,
                    points=points,
                    catalog_file=session.catalog_file,
                    bytes_written=session.bytes_written,
                    continued_from=session.continued_from,
                    continues_on=session.continues_on,
                )
            )
            if rows:
                c.execute(media_contents.insert(), [dict(r, medium_id=medium_id) for r in rows])
            c.execute(
                media.update()
                .where(media.c.id == medium_id)
                .values(
                    sessions=media.c.sessions + 1,
                    bytes_written=media.c.bytes_written + session.bytes_written,
                    first_written=sa.func.coalesce(media.c.first_written, session.written_at),
                    last_written=session.written_at,
                )
            )
            return self.get_medium(key)

    def sessions(self, key: MediumKey) -> list[SessionRecord]:
        with self.transaction() as c:
            medium_id = self._medium_id(c, key)
            rows = c.execute(
                sa.select(sessions)
                .where(sessions.c.medium_id == medium_id)
                .order_by(sessions.c.number)
            ).all()
        return [convert.session(r) for r in rows]

    def set_continues_on(self, key: MediumKey, number: int, continues_on: uuid.UUID | None) -> None:
        """Link session `number` of a medium to the medium a spanning copy
        continues on (the next cartridge's media id; it may be unknown)."""
        with self.transaction() as c:
            medium_id = self._medium_id(c, key)
            done = c.execute(
                sessions.update()
                .where(sessions.c.medium_id == medium_id, sessions.c.number == number)
                .values(continues_on=continues_on)
            )
            if not done.rowcount:
                raise CatalogError(f"catalog: medium {key} has no session {number}")

    def continued_by(self, media_id: uuid.UUID) -> list[uuid.UUID]:
        """The media (known to the catalog) with a session that continues
        from `media_id`: the next cartridges of spanning copies."""
        query = (
            sa.select(media.c.media_id)
            .join(sessions, sessions.c.medium_id == media.c.id)
            .where(sessions.c.continued_from == media_id)
            .distinct()
            .order_by(media.c.media_id)
        )
        with self.transaction() as c:
            return [convert.as_uuid(r) for r in c.scalars(query)]

    def contents(self, key: MediumKey) -> list[ContentEntry]:
        with self.transaction() as c:
            medium_id = self._medium_id(c, key)
            rows = c.execute(
                sa.select(media_contents)
                .where(media_contents.c.medium_id == medium_id)
                .order_by(
                    media_contents.c.session,
                    media_contents.c.file_number,
                    media_contents.c.first_record,
                )
            ).all()
        return [convert.entry(r) for r in rows]

    def find_point(self, point_id: str | bytes) -> list[Placement]:
        """Where a point's session-catalog entries are: online media first."""
        column = media_contents.c.point_id
        return self._placements(column == hex_id(point_id, "point"))

    def match_points(self, prefix: str, limit: int = 2) -> list[str]:
        """Point ids on media that start with `prefix` (lowercase hex), at
        most `limit` of them: a restore resolves a short id with it."""
        if not _HEX_PREFIX.fullmatch(prefix):
            return []
        column = media_contents.c.point_id
        query = (
            sa.select(column)
            .where(column >= prefix, column < prefix + "g")  # hex sorts below "g"
            .distinct()
            .order_by(column)
            .limit(limit)
        )
        with self.transaction() as c:
            return [str(r) for r in c.scalars(query)]

    def find_pack(self, pack_id: str | bytes) -> list[Placement]:
        """Every copy of a pack on media, with its file and first record."""
        return self._placements(media_contents.c.pack_id == hex_id(pack_id, "pack"))

    def wipe_contents(self, key: MediumKey) -> int:
        """Forget what a medium holds (relabel, recycle): its sessions and
        contents go, its counters restart. Returns the entries removed."""
        with self.transaction() as c:
            medium_id = self._medium_id(c, key)
            removed = c.execute(
                media_contents.delete().where(media_contents.c.medium_id == medium_id)
            ).rowcount
            c.execute(sessions.delete().where(sessions.c.medium_id == medium_id))
            c.execute(
                media.update()
                .where(media.c.id == medium_id)
                .values(sessions=0, bytes_written=0, first_written=None, last_written=None)
            )
        return int(removed)

    # --- events --------------------------------------------------------------

    def add_event(self, event: Event) -> Event:
        with self.transaction() as c:
            new_id = c.execute(events.insert().values(**_event_values(event))).inserted_primary_key
        return dataclasses.replace(event, id=int(new_id[0]) if new_id else None)

    def add_events(self, batch: Iterable[Event]) -> None:
        rows = [_event_values(e) for e in batch]
        if rows:
            with self.transaction() as c:
                c.execute(events.insert(), rows)

    def list_events(
        self,
        *,
        barcode: str | None = None,
        library: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Newest first."""
        query = sa.select(events)
        if barcode is not None:
            query = query.where(events.c.barcode == barcode)
        if library is not None:
            query = query.where(events.c.library == library)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        if since is not None:
            query = query.where(events.c.at >= since)
        query = query.order_by(events.c.at.desc(), events.c.id.desc()).limit(limit)
        with self.transaction() as c:
            return [convert.event(r) for r in c.execute(query)]

    # --- rebuilding ----------------------------------------------------------

    def forget_media(
        self, library: str | None = None, *, only: Iterable[MediumKey] | None = None
    ) -> int:
        """Delete media with their sessions and contents, and the drives'
        loaded barcodes (of `library`), so that an inventory can rebuild them
        from the media. `only`: just these (barcodes or media ids; a key not
        in the catalog is skipped), wherever they are recorded; else every
        medium of `library` (or all). Libraries, pools and events stay.
        Returns the media deleted."""
        with self.transaction() as c:
            clear = drives.update()
            if library is not None:
                library_id = self._library_id(c, library)
                clear = clear.where(drives.c.library_id == library_id)
            if only is not None:
                keys = list(only)
                barcodes = [k for k in keys if isinstance(k, str)]
                ids = [k for k in keys if isinstance(k, uuid.UUID)]
                removed = 0
                for chunk in _chunks(barcodes):
                    removed += c.execute(media.delete().where(media.c.barcode.in_(chunk))).rowcount
                for chunk in _chunks(ids):
                    removed += c.execute(media.delete().where(media.c.media_id.in_(chunk))).rowcount
            else:
                which = media.delete()
                if library is not None:
                    which = which.where(media.c.library_id == library_id)
                removed = c.execute(which).rowcount
            c.execute(clear.values(loaded_barcode=None))
        return int(removed)

    # --- helpers -------------------------------------------------------------

    def _placements(self, where: sa.ColumnElement[bool]) -> list[Placement]:
        with self.transaction() as c:
            rows = c.execute(convert.placements_select().where(where)).all()
        return [convert.placement(r) for r in rows]

    def _library_id(self, c: sa.Connection, name: str) -> int:
        found = c.scalar(sa.select(libraries.c.id).where(libraries.c.name == name))
        if found is None:
            raise CatalogError(f"catalog: no library {name}")
        return int(found)

    def _pool_id(self, c: sa.Connection, name: str) -> int:
        found = c.scalar(sa.select(pools.c.id).where(pools.c.name == name))
        if found is None:
            raise CatalogError(f"catalog: no pool {name}")
        return int(found)

    def _medium_id(self, c: sa.Connection, key: MediumKey) -> int:
        found = c.scalar(sa.select(media.c.id).where(_key_clause(key)))
        if found is None:
            raise MediaNotFound(f"no medium {key} in the catalog")
        return int(found)

    def _medium_values(self, c: sa.Connection, fields: Mapping[str, Any]) -> dict[str, Any]:
        values = {k: v for k, v in fields.items() if k in _MEDIUM_FIELDS}
        if values.get("barcode") is not None:
            check_barcode(values["barcode"])
        if "state" in values:
            values["state"] = str(MediumState(values["state"]))
        if "library" in values:
            name = values.pop("library")
            values["library_id"] = None if name is None else self._library_id(c, name)
        if "pool" in values:
            name = values.pop("pool")
            values["pool_id"] = None if name is None else self._pool_id(c, name)
        return values

    def _set_drives_loaded(
        self, c: sa.Connection, library_id: int, loaded: Mapping[int, str | None]
    ) -> None:
        known = set(c.scalars(sa.select(drives.c.address).where(drives.c.library_id == library_id)))
        rows = [{"_a": a, "_b": check_barcode(b) if b else None} for a, b in sorted(loaded.items())]
        updates = [r for r in rows if r["_a"] in known]
        if updates:
            c.execute(
                drives.update()
                .where(drives.c.library_id == library_id, drives.c.address == sa.bindparam("_a"))
                .values(loaded_barcode=sa.bindparam("_b")),
                updates,
            )
        inserts = [
            {"library_id": library_id, "address": r["_a"], "loaded_barcode": r["_b"]}
            for r in rows
            if r["_a"] not in known
        ]
        if inserts:
            c.execute(drives.insert(), inserts)


def _key_clause(key: MediumKey) -> sa.ColumnElement[bool]:
    if isinstance(key, uuid.UUID):
        return media.c.media_id == key
    return media.c.barcode == key


def _pool_values(pool: Pool) -> dict[str, Any]:
    if pool.retention_seconds < 0:
        raise CatalogError(f"catalog: pool {pool.name}: retention must not be negative")
    return {
        "name": pool.name,
        "retention_seconds": pool.retention_seconds,
        "media_type": pool.media_type,
        "cleaning_prefix": pool.cleaning_prefix,
        "notes": pool.notes,
    }


def _entry_values(entry: ContentEntry, session: int) -> dict[str, Any]:
    if entry.session != session:
        raise CatalogError(f"catalog: a content entry of session {entry.session} in {session}")
    if (entry.point_id is None) == (entry.pack_id is None):
        raise CatalogError("catalog: a content entry names a point or a pack, exactly one")
    numbers = (entry.file_number, entry.first_record, entry.record_count, entry.byte_count)
    if min(numbers) < 0:
        raise CatalogError("catalog: a content entry's positions and sizes must not be negative")
    return {
        "session": session,
        "point_id": None if entry.point_id is None else hex_id(entry.point_id, "point"),
        "pack_id": None if entry.pack_id is None else hex_id(entry.pack_id, "pack"),
        "file_number": entry.file_number,
        "first_record": entry.first_record,
        "record_count": entry.record_count,
        "byte_count": entry.byte_count,
    }


def _event_values(event: Event) -> dict[str, Any]:
    return {
        "at": event.at,
        "kind": event.kind,
        "library": event.library,
        "barcode": event.barcode,
        "severity": str(Severity(event.severity)),
        "message": event.message,
        "data": dict(event.data),
    }


def _location_events(
    library: str, changes: LocationChanges, seen: Mapping[str, Sighting], at: datetime
) -> list[Event]:
    out = []
    for barcode in changes.back_online:
        where = seen[barcode]
        place = f"slot {where.slot}" if where.drive is None else f"drive {where.drive}"
        out.append(
            Event(
                at=at,
                kind="online",
                message=f"{barcode} is back online in {library} ({place})",
                library=library,
                barcode=barcode,
                data={"slot": where.slot, "drive": where.drive},
            )
        )
    for barcode in changes.went_offline:
        out.append(
            Event(
                at=at,
                kind="offline",
                message=f"{barcode} is no longer in {library}: offline",
                severity=Severity.WARNING,
                library=library,
                barcode=barcode,
            )
        )
    return out
