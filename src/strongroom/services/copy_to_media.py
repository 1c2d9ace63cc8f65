"""`strongroom copy-to-media`: write points (their packs, manifests and
trees) to the media of a pool, spanning cartridges (docs/media.md,
"Copying points to media").

The medium written: an appending one of the pool that is in the library,
else a free one, else an expired one recycled (media_pools.recycle); none:
MediaError naming the command that labels one (or, with `wait`, poll for an
operator until the time is up). One job id for the whole copy: when a
cartridge fills (the writer's `deferred`), it is marked full and the next
writable one continues the job where the first stopped.

Consistency with the tape: a session is recorded in the catalog (one
transaction: its session row, its contents, the medium's counters, state
and expiry) only after the writer returned, i.e. after its session catalog
is on the tape. A drive error or a killed process leaves a session without
a catalog on the tape and nothing in the catalog; the next session on that
cartridge appends after it (media/writer.py closes the dead file), and a
reader skips it as truncated.

A point is skipped when it is already on media of the pool: an entry for
the point and every pack it needs on media of the pool that are appending
or full. Packs already there are not written again (`again` writes all).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

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
from strongroom.errors import ChangerError, EndOfMedium, MediaError
from strongroom.media.changer import Changer
from strongroom.media.drive import Drive, Position
from strongroom.media.writer import SessionWritten, point_packs, write_session
from strongroom.repository import format as fmt
from strongroom.repository.repo import Repository
from strongroom.services.library_lock import LOCK_WAIT, library_lock
from strongroom.services.media_pools import (
    ensure_library,
    expiry,
    get_pool,
    load,
    mark_expired,
    now_utc,
    recycle,
    same_medium,
)
from strongroom.services.walk import referenced_by_points
from strongroom.types import Progress, ProgressCallback

HOLDING = (MediumState.APPENDING, MediumState.FULL)
POLL_SECONDS = 10.0


@dataclass(frozen=True)
class CartridgeWritten:
    barcode: str
    media_id: str
    session: int
    packs: int
    bytes_written: int
    state: str
    recycled: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "barcode": self.barcode,
            "media_id": self.media_id,
            "session": self.session,
            "packs": self.packs,
            "bytes_written": self.bytes_written,
            "state": self.state,
            "recycled": self.recycled,
        }


@dataclass
class CopyResult:
    pool: str
    library: str
    job: str = ""
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cartridges: list[CartridgeWritten] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # packs left out: they do not hash

    @property
    def bytes_written(self) -> int:
        return sum(c.bytes_written for c in self.cartridges)

    def as_dict(self) -> dict[str, object]:
        return {
            "pool": self.pool,
            "library": self.library,
            "job": self.job,
            "written": self.written,
            "skipped": self.skipped,
            "cartridges": [c.as_dict() for c in self.cartridges],
            "bytes_written": self.bytes_written,
            "damaged": self.damaged,
        }


def no_medium_message(pool: str) -> str:
    return (
        f"no writable medium in pool {pool}: label one with "
        f"'strongroom media label BARCODE --pool {pool}'"
    )


def pool_holdings(catalog: Catalog, pool: str) -> tuple[set[str], set[str]]:
    """Point ids and pack ids (hex) on media of the pool that hold data."""
    points: set[str] = set()
    packs: set[str] = set()
    for medium in catalog.list_media(pool=pool):
        if medium.state not in HOLDING:
            continue
        for entry in catalog.contents(medium.media_id):
            if entry.point_id is not None:
                points.add(entry.point_id)
            if entry.pack_id is not None:
                packs.add(entry.pack_id)
    return points, packs


def copy_to_media(
    catalog: Catalog,
    changer: Changer,
    repo: Repository,
    point_ids: Sequence[str],
    pool_name: str,
    *,
    again: bool = False,
    progress: ProgressCallback | None = None,
    wait: float = 0.0,
    now: Callable[[], datetime] = now_utc,
) -> CopyResult:
    """Write the points (full ids) to the pool's media; see the module."""
    with library_lock(changer, wait=max(wait, LOCK_WAIT)):
        pool = get_pool(catalog, pool_name)
        ensure_library(catalog, changer)
        result = CopyResult(pool.name, changer.name)
        needs = point_packs(repo, list(dict.fromkeys(point_ids)), referenced_by_points)
        on_points, on_packs = (set(), set()) if again else pool_holdings(catalog, pool.name)
        for point_id, packs in needs.items():
            if point_id in on_points and all(p.hex() in on_packs for p in packs):
                result.skipped.append(point_id)
            else:
                result.written.append(point_id)
        if not result.written:
            return result
        todo = sorted({p for pid in result.written for p in needs[pid] if p.hex() not in on_packs})
        job = uuid.uuid4().bytes
        result.job = job.hex()
        report = Progress(job="copy-to-media", bytes_total=_stored_size(repo, todo))
        remaining: list[bytes] = todo
        continued_from: bytes | None = None
        previous: tuple[uuid.UUID, int] | None = None  # the session this copy continues
        tried: set[uuid.UUID] = set()
        while True:
            medium, recycled = _writable(catalog, changer, repo, pool, now(), tried, wait)
            written = _write_one(
                catalog,
                changer,
                repo,
                pool,
                medium,
                result.written,
                remaining,
                job,
                continued_from,
                previous,
                report,
                progress,
                now,
            )
            if written is None:  # not even the session catalog fitted: try the next medium
                tried.add(medium.media_id)
                if medium.state is MediumState.FREE:
                    raise MediaError(
                        f"{medium.name} filled before one pack fitted: cartridges too small"
                    )
                continue
            stored, session = written
            result.damaged.extend(p.hex() for p in session.damaged)
            result.cartridges.append(
                CartridgeWritten(
                    medium.name,
                    str(medium.media_id),
                    session.session,
                    len(session.packs),
                    session.bytes_written,
                    str(stored.state),
                    recycled,
                )
            )
            if not session.deferred:
                return result
            remaining, continued_from = session.deferred, session.media_id
            previous = (medium.media_id, session.session)
            tried.add(medium.media_id)


def _stored_size(repo: Repository, packs: Sequence[bytes]) -> int:
    return sum(repo.backend.size(fmt.pack_name(p.hex())) for p in packs)


def _writable(
    catalog: Catalog,
    changer: Changer,
    repo: Repository,
    pool: Pool,
    at: datetime,
    tried: set[uuid.UUID],
    wait: float,
) -> tuple[Medium, bool]:
    """The next medium to write and whether it was recycled for it."""
    deadline = time.monotonic() + wait
    while True:
        found = _pick(catalog, changer, pool, at, tried)
        if found is not None:
            if found.state in (MediumState.APPENDING, MediumState.FREE):
                return found, False
            return recycle(catalog, changer, repo, found, at), True
        if time.monotonic() >= deadline:
            raise MediaError(no_medium_message(pool.name))
        time.sleep(min(POLL_SECONDS, max(0.1, deadline - time.monotonic())))


def _pick(
    catalog: Catalog, changer: Changer, pool: Pool, at: datetime, tried: set[uuid.UUID]
) -> Medium | None:
    status = changer.status()

    def usable(m: Medium) -> bool:
        return m.media_id not in tried and m.barcode is not None and bool(status.where(m.barcode))

    for state in (MediumState.APPENDING, MediumState.FREE):
        for m in catalog.list_media(pool=pool.name, state=state, library=changer.name, online=True):
            if usable(m):
                return m
    mark_expired(catalog, at)
    for m in catalog.expired_in_library(changer.name, at):
        if m.pool == pool.name and usable(m):
            return m
    return None


def _write_one(
    catalog: Catalog,
    changer: Changer,
    repo: Repository,
    pool: Pool,
    medium: Medium,
    points: list[str],
    packs: list[bytes],
    job: bytes,
    continued_from: bytes | None,
    previous: tuple[uuid.UUID, int] | None,
    report: Progress,
    progress: ProgressCallback | None,
    now: Callable[[], datetime],
) -> tuple[Medium, SessionWritten] | None:
    """One session on `medium`, recorded; None if the cartridge had no room
    even for the session's catalog (then marked full, nothing recorded)."""
    assert medium.barcode is not None
    loaded = load(changer, medium.barcode)
    drive = _Counting(loaded.drive, report, progress, medium.name)
    try:
        started = now()
        try:
            same_medium(loaded.drive, medium, repo)
            session = write_session(
                drive,
                repo,
                points,
                reach=referenced_by_points,
                packs=packs,
                job=job,
                continued_from=continued_from,
                now=started.timestamp(),
            )
        except EndOfMedium as err:
            _full_without_session(catalog, medium, str(err), started)
            return None
        except MediaError as err:
            _failed(catalog, medium, err, started)
            # a drive names a device or a file: say which cartridge it was
            raise type(err)(f"writing cartridge {medium.name}: {err}") from err
        except BaseException as err:
            _failed(catalog, medium, err, started)
            raise
        state = MediumState.FULL if session.ended_early or drive.near_end else MediumState.APPENDING
        stored = _record(
            catalog, pool, medium, session, state, now(), loaded.slot, continued_from, previous
        )
    finally:
        try:
            loaded.unload()
        except ChangerError as err:
            _failed(catalog, medium, err, now())
            raise
    return stored, session


def _record(
    catalog: Catalog,
    pool: Pool,
    medium: Medium,
    session: SessionWritten,
    state: MediumState,
    at: datetime,
    slot: int | None,
    continued_from: bytes | None,
    previous: tuple[uuid.UUID, int] | None = None,
) -> Medium:
    """The session's rows, counters, state and expiry, the previous
    cartridge's session linked to this one (`continues_on`), and an event:
    one transaction."""
    entries = [
        ContentEntry(session.session, session.catalog_file, 0, 0, 0, point_id=pid)
        for pid in session.points
    ]
    entries += [
        ContentEntry(
            session.session, p.file, p.record, p.records, p.length, pack_id=p.pack_id.hex()
        )
        for p in session.packs
    ]
    record = SessionRecord(
        number=session.session,
        written_at=at,
        points=tuple(session.points),
        catalog_file=session.catalog_file,
        bytes_written=session.bytes_written,
        continued_from=None if continued_from is None else uuid.UUID(bytes=continued_from),
    )
    with catalog.transaction():
        catalog.record_session(medium.media_id, record, entries)
        if previous is not None:
            catalog.set_continues_on(previous[0], previous[1], medium.media_id)
        stored = catalog.update_medium(
            medium.media_id,
            state=state,
            expires_at=expiry(pool, at),
            online=True,
            slot=slot,
            drive=None,
            error=None,
        )
        catalog.add_event(
            Event(
                at=at,
                kind="written",
                message=(
                    f"{medium.name}: session {session.session}, {len(session.packs)} packs, "
                    f"{session.bytes_written} bytes ({state})"
                ),
                library=medium.library,
                barcode=medium.barcode,
                data={"job": session.job.hex(), "session": session.session, "state": str(state)},
            )
        )
    return stored


def _full_without_session(catalog: Catalog, medium: Medium, why: str, at: datetime) -> None:
    with catalog.transaction():
        catalog.update_medium(medium.media_id, state=MediumState.FULL)
        catalog.add_event(
            Event.about(medium, at, "full", f"{medium.name} is full: {why}", Severity.WARNING)
        )


def _failed(catalog: Catalog, medium: Medium, err: BaseException, at: datetime) -> None:
    """Nothing of the session is recorded; the medium keeps its state (the
    next session appends after the dead one) and the error is noted."""
    why = str(err) or type(err).__name__
    try:
        with catalog.transaction():
            catalog.update_medium(medium.media_id, error=why[:500])
            catalog.add_event(
                Event.about(
                    medium,
                    at,
                    "write-failed",
                    f"{medium.name}: copy-to-media stopped: {why}",
                    Severity.ERROR,
                )
            )
    except Exception:  # the catalog's own failure must not hide the first one
        pass


class _Counting:
    """The loaded drive, counting the bytes written for the progress report."""

    def __init__(
        self, drive: Drive, report: Progress, callback: ProgressCallback | None, name: str
    ) -> None:
        self._drive = drive
        self._report = report
        self._callback = callback
        self.record_size = drive.record_size
        report.current = name

    @property
    def near_end(self) -> bool:
        return self._drive.near_end

    def rewind(self) -> None:
        self._drive.rewind()

    def position(self) -> Position:
        return self._drive.position()

    def locate(self, position: Position) -> None:
        self._drive.locate(position)

    def space_to_end_of_data(self) -> None:
        self._drive.space_to_end_of_data()

    def write_record(self, data: bytes) -> None:
        self._drive.write_record(data)
        self._report.bytes_done += len(data)
        if self._callback is not None:
            self._callback(self._report)

    def write_filemark(self, count: int = 1) -> None:
        self._drive.write_filemark(count)

    def read_record(self) -> bytes | None:
        return self._drive.read_record()

    def close(self) -> None:
        self._drive.close()
