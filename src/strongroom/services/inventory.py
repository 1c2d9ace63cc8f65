"""Inventory of a library: fast (barcodes, no cartridge moved) and detailed
(load, read the label and session catalogs, classify, import).

Fast: one `status()` of the changer and one `Catalog.set_locations`: known
barcodes get their slot (and come back online, with an event, if they had
been offline), media of this library no longer seen go offline, cleaning
cartridges (barcode prefix of the library or of any pool) are recorded as
such and never loaded. New barcodes and cartridges without one are queued.

Detailed (the queue, or every cartridge but cleaning ones with
`Detailed.ALL`): each cartridge is loaded into a free drive (a drive loaded
with a cartridge nobody uses, since we hold the library's lock, is unloaded
to its slot first when none is free), read (media/label.py,
media/format.py) and unloaded back to its slot; cartridges already in a drive
are read there. A drive or changer failure marks that cartridge `error` and
the inventory goes on; each cartridge is recorded in its own transaction, so
one failure never undoes another's result.

Both run under the library's lock (`library_lock`): one job at a time moves
a library's cartridges. Copy-to-media and restore take the same lock.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.catalog import (
    Catalog,
    Event,
    Library,
    LibraryKind,
    Medium,
    MediumState,
    Severity,
    Sighting,
)
from strongroom.catalog.records import MAX_BARCODE
from strongroom.config import NotifySpec, Settings
from strongroom.errors import CatalogError, ChangerError, DriveError, IntegrityError
from strongroom.media.changer import Changer, ChangerStatus
from strongroom.media.drive import Drive
from strongroom.media.format import read_cartridge
from strongroom.media.label import LabelReading, MediaClass, classify, read_label
from strongroom.media.libraries import open_library
from strongroom.repository.keys import MasterKey
from strongroom.services.library_lock import library_lock
from strongroom.services.media_import import ERROR, Examined, import_cartridge
from strongroom.services.notify import Delivery, Notice, configured, notify

DEFAULT_CLEANING = "CLN"


class Detailed(enum.StrEnum):
    AUTO = "auto"  # the new barcodes and the cartridges without one
    ALL = "all"  # every cartridge but cleaning ones
    NONE = "none"  # fast only: the queue is reported, not read


class Status(enum.StrEnum):
    KNOWN = "known"
    BACK_ONLINE = "back online"
    WENT_OFFLINE = "went offline"
    NEW = "new"
    NO_BARCODE = "no barcode"
    CLEANING = "cleaning"


@dataclass(frozen=True)
class Keys:
    """The open repository's id and key: what tells ours from foreign."""

    repository_id: str
    master: MasterKey


@dataclass
class Line:
    """One cartridge in an inventory's output."""

    barcode: str | None
    slot: int | None
    drive: int | None
    status: Status
    media_class: str | None = None  # after a detailed inventory
    reason: str = ""
    media_id: str | None = None
    sessions: int = 0
    new_medium: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "barcode": self.barcode,
            "slot": self.slot,
            "drive": self.drive,
            "status": self.status.value,
            "class": self.media_class,
            "reason": self.reason,
            "media_id": self.media_id,
            "sessions": self.sessions,
            "new_medium": self.new_medium,
        }


@dataclass
class Report:
    library: str
    lines: list[Line] = field(default_factory=list)
    notifications: list[Delivery] = field(default_factory=list)
    forgotten: int = 0  # media forgotten first (rebuild-catalog)

    def having(self, status: Status) -> list[Line]:
        return [line for line in self.lines if line.status is status]

    @property
    def detailed(self) -> list[Line]:
        """The cartridges read in a drive (a cleaning cartridge never is)."""
        return [
            line
            for line in self.lines
            if line.media_class is not None and line.status is not Status.CLEANING
        ]

    @property
    def new_media(self) -> list[Line]:
        return [line for line in self.lines if line.new_medium]

    def as_dict(self) -> dict[str, Any]:
        def codes(status: Status) -> list[str | None]:
            return [line.barcode for line in self.having(status)]

        return {
            "library": self.library,
            "cartridges": [line.as_dict() for line in self.lines],
            "known": codes(Status.KNOWN) + codes(Status.BACK_ONLINE),
            "back_online": codes(Status.BACK_ONLINE),
            "went_offline": [  # without a barcode: the media id
                line.barcode or line.media_id for line in self.having(Status.WENT_OFFLINE)
            ],
            "new": codes(Status.NEW),
            "no_barcode": [line.slot for line in self.having(Status.NO_BARCODE)],
            "cleaning": codes(Status.CLEANING),
            "detailed": [line.as_dict() for line in self.detailed],
            "new_media": [line.as_dict() for line in self.new_media],
            "notifications": [
                {"notifier": d.notifier, "ok": d.ok, "message": d.message}
                for d in self.notifications
            ],
            "forgotten": self.forgotten,
        }


# --- entry points ------------------------------------------------------------


def inventory_library(
    name: str,
    settings: Settings,
    catalog: Catalog,
    *,
    detailed: Detailed = Detailed.AUTO,
    keys: Keys | None = None,
    wait: float = 0.0,
    rebuild: bool = False,
) -> Report:
    """The `library inventory` / `library rebuild-catalog` use case."""
    changer = open_library(name, settings)
    spec = settings.libraries.get(name)
    kind = LibraryKind(spec.kind) if spec is not None else LibraryKind.VIRTUAL
    prefix = spec.cleaning_prefix if spec is not None else DEFAULT_CLEANING
    return inventory(
        catalog,
        changer,
        kind=kind,
        cleaning=[prefix],
        detailed=Detailed.ALL if rebuild else detailed,
        keys=keys,
        notifiers=settings.notify,
        wait=wait,
        rebuild=rebuild,
    )


def inventory(
    catalog: Catalog,
    changer: Changer,
    *,
    kind: LibraryKind = LibraryKind.VIRTUAL,
    cleaning: Sequence[str] = (DEFAULT_CLEANING,),
    detailed: Detailed = Detailed.AUTO,
    keys: Keys | None = None,
    notifiers: NotifySpec | None = None,
    wait: float = 0.0,
    rebuild: bool = False,
) -> Report:
    """Fast inventory, then the detailed one (`detailed`); with `rebuild` the
    media present in the library are forgotten first (those with a barcode
    before the fast inventory, those without one as their label is read) and
    every cartridge is read; offline media keep their records."""
    name = changer.name
    with library_lock(changer, wait):
        try:
            catalog.get_library(name)
        except CatalogError:  # not there yet
            catalog.add_library(Library(name, kind))
        report = Report(name)
        status = changer.status()
        if rebuild:  # the media present now; offline ones keep their records
            codes = (e.barcode for e in status.elements() if e.full)
            present = [b for b in codes if b is not None and _usable(b)]
            report.forgotten = catalog.forget_media(name, only=present)
        prefixes = tuple({*cleaning, *(p.cleaning_prefix for p in catalog.list_pools())} - {""})
        queue = _fast(catalog, status, report, prefixes, detailed)
        if detailed is not Detailed.NONE:
            _detailed(catalog, changer, report, queue, keys, rebuild)
            _back_by_label(report)
    _tell(catalog, report, notifiers)
    return report


# --- fast ----------------------------------------------------------------------


def _fast(
    catalog: Catalog,
    status: ChangerStatus,
    report: Report,
    prefixes: tuple[str, ...],
    detailed: Detailed,
) -> list[Line]:
    name = report.library
    seen: list[Sighting] = []
    lines: dict[str, Line] = {}
    for element in status.elements():
        if not element.full:
            continue
        slot = element.loaded_from if element.is_drive else element.address
        drive = element.address if element.is_drive else None
        barcode = element.barcode if _usable(element.barcode) else None
        line = Line(barcode, slot, drive, Status.NO_BARCODE)
        if barcode is not None:
            if barcode in lines:
                raise ChangerError(f"{name}: two cartridges read as barcode {barcode}")
            lines[barcode] = line
            seen.append(Sighting(barcode, slot, drive))
        else:
            line.reason = "" if element.barcode is None else f"unusable barcode {element.barcode!r}"
        report.lines.append(line)
    loaded = {
        d.address: (d.barcode if d.full and _usable(d.barcode) else None) for d in status.drives
    }
    states = {m.barcode: m.state for m in catalog.list_media(library=name) if m.barcode}
    changes = catalog.set_locations(name, seen, drives_loaded=loaded)
    unknown = set(changes.unknown)
    back = set(changes.back_online)
    at = datetime.now(UTC)
    for barcode, line in lines.items():
        is_cleaning = barcode.startswith(prefixes)
        if barcode in unknown:
            if is_cleaning:
                line.status = Status.CLEANING
                line.new_medium, line.media_class = True, "cleaning"
                _add_cleaning(catalog, name, line, at)
            else:
                line.status = Status.NEW
        elif is_cleaning or states.get(barcode) is MediumState.CLEANING:
            line.status = Status.CLEANING
        else:
            line.status = Status.BACK_ONLINE if barcode in back else Status.KNOWN
    for barcode in changes.went_offline:
        report.lines.append(Line(barcode, None, None, Status.WENT_OFFLINE))
    for media_id in changes.went_offline_ids:  # no barcode: named by the label's media id
        report.lines.append(Line(None, None, None, Status.WENT_OFFLINE, media_id=str(media_id)))
    wanted = {Status.NEW, Status.NO_BARCODE}
    if detailed is Detailed.ALL:
        wanted |= {Status.KNOWN, Status.BACK_ONLINE}
    queue = [line for line in report.lines if line.status in wanted]
    queue.sort(key=lambda line: line.drive is None)  # those in a drive first: they are read there
    return queue


def _usable(barcode: str | None) -> bool:
    return (
        barcode is not None
        and 0 < len(barcode) <= MAX_BARCODE
        and barcode.isprintable()
        and " " not in barcode
    )


def _add_cleaning(catalog: Catalog, library: str, line: Line, at: datetime) -> None:
    medium = catalog.add_medium(
        Medium(
            media_id=uuid.uuid4(),
            barcode=line.barcode,
            state=MediumState.CLEANING,
            online=True,
            library=library,
            slot=line.slot,
            drive=line.drive,
        )
    )
    line.media_id = str(medium.media_id)
    catalog.add_event(
        Event(
            at=at,
            kind="inventoried",
            message=f"{line.barcode} in {library}: a cleaning cartridge (never loaded for data)",
            library=library,
            barcode=line.barcode,
            data={"class": "cleaning", "media_id": line.media_id},
        )
    )


# --- detailed ----------------------------------------------------------------


def _detailed(
    catalog: Catalog,
    changer: Changer,
    report: Report,
    queue: list[Line],
    keys: Keys | None,
    rebuild: bool = False,
) -> None:
    failed: set[int] = set()  # drives that failed to unload: not used again
    for line in queue:
        found = _examine(changer, line, keys, failed)
        if rebuild and line.barcode is None and found.label is not None:
            # a cartridge without a barcode is known by its label's media id only
            report.forgotten += catalog.forget_media(
                report.library, only=[uuid.UUID(bytes=found.label.media_id)]
            )
        imported = import_cartridge(
            catalog, report.library, line.barcode, line.slot, line.drive, found
        )
        line.media_class, line.reason = found.media_class, found.reason
        if imported.medium is not None:
            line.media_id = str(imported.medium.media_id)
            line.media_class = (
                found.media_class if found.media_class != MediaClass.SUSPECT else "suspect"
            )
        line.sessions = imported.sessions
        line.new_medium = imported.new
        if imported.medium is None:
            catalog.add_event(
                Event(
                    at=datetime.now(UTC),
                    kind="inventoried",
                    message=(
                        f"a cartridge without a barcode in {report.library} slot {line.slot}: "
                        f"{found.media_class} (not recorded: nothing identifies it)"
                    ),
                    library=report.library,
                    data={"class": found.media_class, "slot": line.slot},
                )
            )


def _back_by_label(report: Report) -> None:
    """A medium without a barcode that the fast part took offline and the
    detailed part read back in the library is not reported as gone."""
    read = {line.media_id for line in report.detailed if line.media_id is not None}
    report.lines = [
        line
        for line in report.lines
        if not (
            line.status is Status.WENT_OFFLINE and line.barcode is None and line.media_id in read
        )
    ]


def _examine(changer: Changer, line: Line, keys: Keys | None, failed: set[int]) -> Examined:
    loaded: int | None = None
    try:
        if line.drive is not None:
            address = line.drive
        else:
            if line.slot is None:
                return Examined(ERROR, "the changer does not say which slot it is in")
            address = _free_drive(changer, failed)
            changer.load(line.slot, address)
            loaded = address
        drive = changer.drive(address)
        try:
            found = _read(drive, keys, line.barcode)
        finally:
            drive.close()
    except (DriveError, ChangerError) as err:
        found = Examined(ERROR, str(err))
    except IntegrityError as err:
        found = Examined(MediaClass.DAMAGED.value, str(err))
    if loaded is not None:
        try:
            changer.unload(loaded, line.slot)
        except ChangerError as err:
            failed.add(loaded)
            found = Examined(ERROR, f"could not unload drive {loaded}: {err}")
            line.drive, line.slot = loaded, None
    return found


def _free_drive(changer: Changer, failed: set[int]) -> int:
    status = changer.status()
    usable = [d for d in status.drives if d.address not in failed]
    for element in usable:
        if not element.full:
            return element.address
    for element in usable:  # every drive is loaded: we hold the lock, nobody uses them
        if element.loaded_from is not None:
            changer.unload(element.address)
            return element.address
        free = status.free_slots()
        if free:
            changer.unload(element.address, free[0])
            return element.address
    raise ChangerError(f"{changer.name}: no drive can be freed to read a cartridge")


def _read(drive: Drive, keys: Keys | None, barcode: str | None) -> Examined:
    reading = read_label(drive)
    if keys is None:
        return _label_only(reading, barcode)
    verdict = classify(reading, keys.repository_id, keys.master, barcode)
    if verdict.media_class is MediaClass.OURS:
        cartridge = read_cartridge(drive, master=keys.master)
        return Examined(MediaClass.OURS.value, "", cartridge.label, cartridge)
    return Examined(verdict.media_class.value, verdict.reason, verdict.label)


def _label_only(reading: LabelReading, barcode: str | None) -> Examined:
    """Without the repository's key: what the label says, never `ours`."""
    label = reading.label
    if reading.state is not None or label is None:
        return Examined((reading.state or MediaClass.DAMAGED).value, reading.reason)
    if barcode is not None and label.barcode != barcode:
        why = f"labelled {label.barcode!r}, but the changer reads {barcode!r}"
        return Examined(MediaClass.SUSPECT.value, why, label)
    why = (
        f"labelled by repository {label.repository_id[:8]}; not verified "
        "(no repository open: run --detailed with its password to import it)"
    )
    return Examined(MediaClass.FOREIGN.value, why, label)


# --- telling the user ----------------------------------------------------------


def _tell(catalog: Catalog, report: Report, spec: NotifySpec | None) -> None:
    new = report.new_media
    if not new or spec is None or not configured(spec):
        return
    notice = Notice(
        "new-media",
        report.library,
        f"{len(new)} new medi{'um' if len(new) == 1 else 'a'} in library {report.library}",
        [
            {
                "barcode": line.barcode,
                "slot": line.slot,
                "class": line.media_class,
                "reason": line.reason,
                "media_id": line.media_id,
                "sessions": line.sessions,
            }
            for line in new
        ],
    )
    report.notifications = notify(spec, notice)
    failures = [d for d in report.notifications if not d.ok]
    catalog.add_events(
        Event(
            at=datetime.now(UTC),
            kind="notify-failed",
            message=f"notifier {d.notifier} failed: {d.message}",
            severity=Severity.WARNING,
            library=report.library,
            data={"notifier": d.notifier},
        )
        for d in failures
    )
