"""Pools, labelling, media states and recycling (docs/media.md, "Pools,
labels and retention").

A pool is media that share a retention. A medium's retention runs from its
last write: once `last_written + retention` has passed it is *expired*, and
an expired medium that is online in the library may be recycled: relabelled
(same media id, label rewritten, which on tape erases everything after it),
its contents wiped in the catalog, state free.

Labelling writes the label first and records the medium in the catalog
after, in one transaction. A crash between the two leaves a labelled
cartridge the catalog does not know (or knows as blank): the next detailed
inventory reads its label and imports it, and `media label` accepts it again
(a label of ours with no session on it is relabelled without `--force`).

Refusals (Bareos's "already labeled"): a cartridge carrying data is never
relabelled without `force`: our label with sessions, another repository's
label, a label under another barcode (suspect), a damaged label, or data
that is not strongroom's. Cleaning cartridges (the pool's prefix, `CLN` by
default, or known as cleaning) are never loaded.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from strongroom.catalog import (
    Catalog,
    Event,
    Library,
    LibraryKind,
    Medium,
    MediumState,
    Pool,
    Severity,
)
from strongroom.config import Settings
from strongroom.errors import CatalogError, ChangerError, MediaError, MediaNotFound, UsageError
from strongroom.media.changer import Changer, ChangerStatus
from strongroom.media.drive import Drive
from strongroom.media.format import scan
from strongroom.media.label import MediaClass, classify, read_label, write_label
from strongroom.media.libraries import open_library
from strongroom.media.mtx import MtxChanger
from strongroom.media.script_changer import ScriptChanger
from strongroom.media.virtual import libraries_home
from strongroom.repository.repo import Repository
from strongroom.services.library_lock import LOCK_WAIT, library_lock

# Retention units: months and years as Bareos counts them (30 and 365 days);
# `m` is a month here, never a minute (nobody keeps tapes for minutes).
_RETENTION = re.compile(r"^\s*(\d+)\s*([smhdwy]|mo)?\s*$", re.IGNORECASE)
_UNIT = {
    "": 1,
    "s": 1,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "m": 30 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}
MAX_RETENTION = 200 * 365 * 86400
WRITABLE = (MediumState.APPENDING, MediumState.FREE)


def parse_retention(text: str) -> int:
    """Seconds from `7y`, `18m` (months), `6w`, `30d`, `12h`, `0`."""
    match = _RETENTION.match(text)
    if not match:
        raise UsageError(
            f"retention {text!r}: give a number and a unit: 7y, 18m (months), 30d, 12h"
        )
    seconds = int(match.group(1)) * _UNIT[(match.group(2) or "").lower()]
    if seconds > MAX_RETENTION:
        raise UsageError(f"retention {text!r} is longer than 200 years")
    return seconds


def format_retention(seconds: int) -> str:
    """Years, else days, else hours, exactly: 7y, 540d (18m), 12h."""
    for suffix, unit in (("y", 365 * 86400), ("d", 86400), ("h", 3600)):
        if seconds >= unit and seconds % unit == 0:
            return f"{seconds // unit}{suffix}"
    return f"{seconds}s"


def now_utc() -> datetime:
    return datetime.now(UTC)


@contextmanager
def open_catalog(settings: Settings) -> Iterator[Catalog]:
    """The catalog the settings name (SQLite in the data folder by default)."""
    catalog = Catalog.open(settings.catalog)
    try:
        yield catalog
    finally:
        catalog.close()


# --- pools -------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSummary:
    pool: Pool
    media: int
    states: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.pool.name,
            "retention": format_retention(self.pool.retention_seconds),
            "retention_seconds": self.pool.retention_seconds,
            "media_type": self.pool.media_type,
            "cleaning_prefix": self.pool.cleaning_prefix,
            "media": self.media,
            "states": self.states,
        }


def create_pool(catalog: Catalog, name: str, retention: str, media_type: str | None) -> Pool:
    pool = Pool(name=name, retention_seconds=parse_retention(retention), media_type=media_type)
    try:
        return catalog.add_pool(pool)
    except CatalogError as err:
        raise UsageError(str(err).removeprefix("catalog: ")) from None


def get_pool(catalog: Catalog, name: str) -> Pool:
    try:
        return catalog.get_pool(name)
    except CatalogError:
        raise MediaNotFound(
            f"no pool {name} (strongroom pool create {name} --retention 7y)"
        ) from None


def summarize(catalog: Catalog, pool: Pool) -> PoolSummary:
    states: dict[str, int] = {}
    media = catalog.list_media(pool=pool.name)
    for m in media:
        states[str(m.state)] = states.get(str(m.state), 0) + 1
    return PoolSummary(pool, len(media), states)


def list_pools(catalog: Catalog, now: datetime | None = None) -> list[PoolSummary]:
    mark_expired(catalog, now)
    return [summarize(catalog, p) for p in catalog.list_pools()]


def show_pool(
    catalog: Catalog, name: str, now: datetime | None = None
) -> tuple[Pool, list[Medium]]:
    pool = get_pool(catalog, name)
    mark_expired(catalog, now)
    return pool, catalog.list_media(pool=name)


def remove_pool(catalog: Catalog, name: str) -> None:
    """Refused while media belong to it."""
    get_pool(catalog, name)
    held = catalog.list_media(pool=name)
    if held:
        raise MediaError(
            f"pool {name} still holds {len(held)} media ({', '.join(m.name for m in held[:5])}"
            f"{', ...' if len(held) > 5 else ''}): relabel them into another pool first"
        )
    catalog.remove_pool(name)


def mark_expired(catalog: Catalog, now: datetime | None = None) -> list[Medium]:
    """Full and appending media whose retention is over become expired (an
    event each). Offline ones too: their state says what they are good for
    once they come back; only recycling needs them online."""
    now = now or now_utc()
    out = []
    for state in (MediumState.FULL, MediumState.APPENDING):
        for medium in catalog.list_media(state=state):
            if medium.expires_at is not None and medium.expires_at <= now:
                with catalog.transaction():
                    out.append(catalog.update_medium(medium.media_id, state=MediumState.EXPIRED))
                    catalog.add_event(
                        Event.about(
                            medium,
                            now,
                            "expired",
                            f"{medium.name}: retention of pool {medium.pool} is over",
                        )
                    )
    return out


def expiry(pool: Pool, last_written: datetime) -> datetime:
    return last_written + timedelta(seconds=pool.retention_seconds)


# --- the library in the catalog -------------------------------------------------


def library_kind(changer: Changer) -> LibraryKind:
    if isinstance(changer, MtxChanger):
        return LibraryKind.MTX
    if isinstance(changer, ScriptChanger):
        return LibraryKind.SCRIPT
    return LibraryKind.VIRTUAL


def ensure_library(catalog: Catalog, changer: Changer) -> None:
    """The library is in the catalog (media name it)."""
    if changer.name not in {lib.name for lib in catalog.list_libraries()}:
        catalog.add_library(Library(changer.name, library_kind(changer)))


def open_changer(settings: Settings, name: str) -> Changer:
    return open_library(name, settings)


def free_drive(status: ChangerStatus) -> int:
    for element in status.drives:
        if not element.full:
            return element.address
    raise ChangerError("every drive of the library is loaded: unload one first")


@dataclass
class Loaded:
    """A cartridge in a drive for one job, and where it goes back."""

    changer: Changer
    barcode: str
    address: int
    slot: int | None
    drive: Drive

    def unload(self) -> None:
        self.drive.close()
        self.changer.unload(self.address, self.slot)


def load(changer: Changer, barcode: str) -> Loaded:
    """Load the cartridge `barcode` into a free drive (or use the drive it is
    already in). MediaNotFound if the library does not hold it."""
    status = changer.status()
    element = status.where(barcode)
    if element is None:
        raise MediaNotFound(f"no cartridge with barcode {barcode} in library {changer.name}")
    if element.is_drive:
        address, slot = element.address, element.loaded_from
    else:
        address, slot = free_drive(status), element.address
        changer.load(element.address, address)
    try:
        drive = changer.drive(address)
    except BaseException:
        _quietly_unload(changer, address, slot)
        raise
    return Loaded(changer, barcode, address, slot, drive)


def same_medium(drive: Drive, medium: Medium, repo: Repository) -> None:
    """The cartridge in `drive` is `medium`: its label verifies with our key
    and names the medium's id and barcode. A copy appends to it and a
    recycle erases it only then; a cartridge found under the medium's
    barcode that is another (stickers swapped, a relabel the catalog missed)
    is a MediaError before anything is written."""
    verdict = classify(read_label(drive), repo.config.id, repo.master, medium.barcode)
    label = verdict.label
    if verdict.media_class is not MediaClass.OURS or label is None:
        raise MediaError(
            f"{medium.name}: the cartridge under this barcode is {verdict.media_class}"
            f"{f' ({verdict.reason})' if verdict.reason else ''}, not the catalog's medium: "
            "nothing written; run a detailed inventory"
        )
    if label.media_uuid != str(medium.media_id):
        raise MediaError(
            f"{medium.name}: the cartridge under this barcode is media {label.media_uuid}, "
            f"not the catalog's {medium.media_id}: nothing written; run a detailed inventory"
        )


def _quietly_unload(changer: Changer, address: int, slot: int | None) -> None:
    try:
        changer.unload(address, slot)
    except ChangerError:
        pass


# --- labelling ---------------------------------------------------------------


@dataclass(frozen=True)
class LabelResult:
    barcode: str
    labelled: bool
    reason: str = ""  # why not, or what was there before
    media_id: str | None = None
    sequence: int | None = None
    slot: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "barcode": self.barcode,
            "labelled": self.labelled,
            "reason": self.reason,
            "media_id": self.media_id,
            "sequence": self.sequence,
            "slot": self.slot,
        }


def is_cleaning(barcode: str, pool: Pool, known: Medium | None) -> bool:
    return barcode.upper().startswith(pool.cleaning_prefix.upper()) or (
        known is not None and known.state is MediumState.CLEANING
    )


def new_barcodes(catalog: Catalog, status: ChangerStatus, pool: Pool) -> list[str]:
    """`--all-new`: cartridges with a barcode the catalog does not know or
    knows as blank, cleaning cartridges left out, in slot order."""
    out = []
    for element in status.elements():
        if not element.full or element.barcode is None:
            continue
        known = catalog.find_medium(element.barcode)
        if is_cleaning(element.barcode, pool, known):
            continue
        if known is None or known.state is MediumState.BLANK:
            out.append(element.barcode)
    return out


def label_media(
    catalog: Catalog,
    changer: Changer,
    repo: Repository,
    pool_name: str,
    barcodes: Sequence[str],
    *,
    all_new: bool = False,
    force: bool = False,
    now: datetime | None = None,
) -> list[LabelResult]:
    """Label each cartridge for `pool_name` (see the module's refusals). With
    explicit barcodes, a barcode the library does not hold or a cleaning
    cartridge raises before any cartridge moves; a cartridge that carries
    data is refused in its result (the others go on)."""
    with library_lock(changer, wait=LOCK_WAIT):
        pool = get_pool(catalog, pool_name)
        ensure_library(catalog, changer)
        status = changer.status()
        if all_new:
            barcodes = [
                *barcodes,
                *(b for b in new_barcodes(catalog, status, pool) if b not in barcodes),
            ]
        for barcode in barcodes:
            if status.where(barcode) is None:
                raise MediaNotFound(
                    f"no cartridge with barcode {barcode} in library {changer.name}"
                )
            if is_cleaning(barcode, pool, catalog.find_medium(barcode)):
                raise MediaError(
                    f"{barcode} is a cleaning cartridge: it is never labelled for data"
                )
        results = []
        for barcode in barcodes:
            results.append(
                _label_one(catalog, changer, repo, pool, barcode, force, now or now_utc())
            )
        return results


def next_sequence(catalog: Catalog, pool: str) -> int:
    return 1 + max((m.label_sequence or 0 for m in catalog.list_media(pool=pool)), default=0)


def _label_one(
    catalog: Catalog,
    changer: Changer,
    repo: Repository,
    pool: Pool,
    barcode: str,
    force: bool,
    now: datetime,
) -> LabelResult:
    known = catalog.find_medium(barcode)
    loaded = load(changer, barcode)
    try:
        found = scan(loaded.drive)
        verdict = classify(found.reading, repo.config.id, repo.master, barcode)
        cls = verdict.media_class
        before = str(cls) if cls is MediaClass.BLANK else f"{cls}: {verdict.reason}".rstrip(": ")
        keep_id = None
        if cls is MediaClass.OURS and verdict.label is not None:
            keep_id = verdict.label.media_id
            if found.sessions and not force:
                return LabelResult(
                    barcode,
                    False,
                    f"already labelled (pool {verdict.label.pool}, {len(found.sessions)} "
                    "sessions): use --force to erase it",
                    verdict.label.media_uuid,
                    slot=loaded.slot,
                )
        elif cls is not MediaClass.BLANK and not force:
            return LabelResult(
                barcode, False, f"not blank ({before}): use --force to erase it", slot=loaded.slot
            )
        if known is not None:
            keep_id = known.media_id.bytes
        sequence = next_sequence(catalog, pool.name)
        if known is not None and known.pool == pool.name and known.label_sequence:
            sequence = known.label_sequence
        label = write_label(
            loaded.drive,
            repo.master,
            repo.config.id,
            barcode,
            pool.name,
            sequence,
            media_id=keep_id,
            now=now.timestamp(),
        )
    finally:
        loaded.unload()
    media_id = uuid.UUID(bytes=label.media_id)
    fields = {
        "barcode": barcode,
        "state": MediumState.FREE,
        "online": True,
        "library": changer.name,
        "slot": loaded.slot,
        "drive": None,
        "pool": pool.name,
        "label_sequence": sequence,
        "labelled_at": datetime.fromtimestamp(label.labelled, UTC),
        "expires_at": None,
        "repository_id": repo.config.id,
        "error": None,
    }
    with catalog.transaction():
        existing = catalog.find_medium(media_id) or known
        if existing is not None:
            catalog.wipe_contents(existing.media_id)
            catalog.update_medium(existing.media_id, **fields)
        else:
            catalog.add_medium(Medium(media_id=media_id, **fields))  # type: ignore[arg-type]
        catalog.add_event(
            Event(
                at=now,
                kind="labelled",
                message=f"{barcode} labelled for pool {pool.name} (sequence {sequence})",
                library=changer.name,
                barcode=barcode,
                data={"pool": pool.name, "media_id": str(media_id), "before": before},
            )
        )
    return LabelResult(barcode, True, before, str(media_id), sequence, loaded.slot)


def recycle(
    catalog: Catalog, changer: Changer, repo: Repository, medium: Medium, now: datetime
) -> Medium:
    """Relabel an expired medium that is online: the same media id and
    sequence, a new label (erasing the tape after it), contents wiped."""
    if medium.barcode is None or medium.pool is None:
        raise MediaError(f"{medium.name} has no barcode or pool: it cannot be recycled")
    if not medium.online:
        raise MediaError(f"{medium.name} is offline: only media in the library are recycled")
    loaded = load(changer, medium.barcode)
    try:
        same_medium(loaded.drive, medium, repo)
        label = write_label(
            loaded.drive,
            repo.master,
            repo.config.id,
            medium.barcode,
            medium.pool,
            medium.label_sequence or next_sequence(catalog, medium.pool),
            media_id=medium.media_id.bytes,
            now=now.timestamp(),
        )
    finally:
        loaded.unload()
    with catalog.transaction():
        removed = catalog.wipe_contents(medium.media_id)
        fresh = catalog.update_medium(
            medium.media_id,
            state=MediumState.FREE,
            labelled_at=datetime.fromtimestamp(label.labelled, UTC),
            expires_at=None,
            error=None,
            slot=loaded.slot,
            drive=None,
        )
        catalog.add_event(
            Event.about(
                medium,
                now,
                "recycled",
                f"{medium.name} recycled for pool {medium.pool} ({removed} entries gone)",
                Severity.INFO,
                library=changer.name,
            )
        )
    return fresh


def library_name(
    settings: Settings, catalog: Catalog, given: str | None, pool: str | None = None
) -> str:
    """`--library`, else the one library the pool's media are in, else the
    one library there is (catalog, config, virtual); else ask for it."""
    if given:
        return given
    if pool is not None:
        used = {m.library for m in catalog.list_media(pool=pool) if m.library is not None}
        if len(used) == 1:
            return used.pop()
    names = {lib.name for lib in catalog.list_libraries()} | set(settings.libraries)
    home = libraries_home()
    if home.is_dir():
        names |= {p.name for p in home.iterdir() if (p / "state.json").is_file()}
    if len(names) == 1:
        return names.pop()
    if not names:
        raise UsageError("no library: create one with 'strongroom library create NAME --slots N'")
    raise UsageError(f"name the library with --library ({', '.join(sorted(names))})")
