"""Restoring a point that lives only on media (docs/media.md, "Restoring
from media").

`restore_anywhere` is what `strongroom restore` calls: a point the disk
repository holds is restored from it as always; one it does not hold is
looked up in the media catalog, and then

1. the cartridges it needs are named (barcode, pool, sequence), each online
   (seen in its library's status now) or offline; offline ones stop the
   restore with one line listing their barcodes (`wait`: the libraries are
   polled until they appear);
2. each cartridge in turn is loaded into a free drive under the library's
   lock, its label checked against the barcode the changer reads, and what
   the point needs is materialized (media/format.materialize) into a private
   staging folder under the data folder; the cartridge is unloaded to where
   it came from and the lock released;
3. the ordinary restore (services/restore.restore_point) runs on the staging
   folder, an ordinary repository: every kind, target and option as from
   disk, and the same point id and output. The staging folder is removed
   afterwards unless `keep_staging`.

Nothing is written to the target before every cartridge has been read: a
missing cartridge, a damaged record or a suspect label fails before the
restore starts. `restore_from_cartridges` does the same from barcodes given
on the command line, with no catalog and no disk repository: the label and
session catalogs on the cartridges say everything, and the password opens
the key files they carry.

The catalog is only read here (plus one event per cartridge read): where a
cartridge is now is what its library's status says, not what the catalog
last saw.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.config import Settings, data_home
from strongroom.errors import (
    ChangerError,
    IntegrityError,
    MediaError,
    MediaNotFound,
    PointNotFound,
    UsageError,
)
from strongroom.media.changer import Changer, ChangerStatus
from strongroom.media.drive import Drive
from strongroom.media.format import Cartridge, Materialized, materialize, read_cartridge
from strongroom.media.libraries import open_library
from strongroom.media.virtual import libraries_home
from strongroom.repository import format as fmt
from strongroom.repository.crypto import Sealer
from strongroom.repository.keys import MasterKey
from strongroom.repository.repo import MAX_CONFIG_SIZE, RepoConfig, Repository
from strongroom.services.library_lock import library_lock
from strongroom.services.points import PointFilter, find_point
from strongroom.services.restore import Restored, RestoreRequest, restore_point
from strongroom.services.vms import vm_path
from strongroom.storage.base import get_bounded
from strongroom.storage.local import LocalBackend
from strongroom.types import ProgressCallback, no_progress

POLL_SECONDS = 5.0  # --wait-for-media: how often the libraries are looked at
LOCK_SECONDS = 600.0  # how long to wait for a library another command holds
_CONFIG_AD = b"config"  # as repository/repo.py seals the config object

Say = Callable[[str], None]

if TYPE_CHECKING:  # the catalog (SQLAlchemy, alembic) loads only when a restore needs media
    from strongroom.catalog import Catalog, Medium


@dataclass
class MediaOptions:
    wait: bool = False  # poll until offline cartridges are in a library
    keep_staging: bool = False
    library: str | None = None  # --from-media: the library holding the cartridges
    poll_seconds: float = POLL_SECONDS
    say: Say = field(default=lambda _line: None)  # progress lines for the user (stderr)


@dataclass(frozen=True)
class Needed:
    """One cartridge a restore needs, as the user is told about it."""

    barcode: str
    media_id: uuid.UUID | None
    pool: str | None
    sequence: int | None
    library: str | None
    online: bool

    def describe(self) -> str:
        pool = f"pool {self.pool}" if self.pool else "no pool"
        seq = f", sequence {self.sequence}" if self.sequence is not None else ""
        where = f"online in {self.library}" if self.online else "OFFLINE"
        return f"{self.barcode} ({pool}{seq}): {where}"


@dataclass
class MediaRestored:
    restored: Restored
    point_id: str
    cartridges: list[Needed]
    staging: str | None = None  # kept (--keep-staging)
    packs: int = 0
    bytes_read: int = 0


def restore_anywhere(
    repo: Repository,
    req: RestoreRequest,
    settings: Settings,
    password: Callable[[], bytes],
    options: MediaOptions,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> Restored | MediaRestored:
    """From the repository when it holds the point, else from media.
    `password` is asked for only if a cartridge is another repository's."""
    try:
        vm = vm_path(req.vm) if req.vm else None
        find_point(repo, req.point, PointFilter(paths=[vm]) if vm else None)
    except PointNotFound as err:
        if req.point == "latest":
            raise
        not_here = err
    else:
        return restore_point(repo, req, progress, cancel)
    catalog = open_catalog(settings)
    if catalog is None:
        raise PointNotFound(f"{not_here} (and there is no media catalog)")
    with catalog:
        point_id = resolve_on_media(catalog, req.point)
        if point_id is None:
            raise PointNotFound(f"{not_here}, nor in the media catalog")
        plan = plan_cartridges(catalog, point_id, settings)
        return _restore_planned(
            catalog, plan, point_id, repo, req, settings, password, options, progress, cancel
        )


def restore_from_cartridges(
    barcodes: Sequence[str],
    req: RestoreRequest,
    settings: Settings,
    password: bytes,
    options: MediaOptions,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> MediaRestored:
    """`restore --from-media BARCODE... POINT`: no catalog, no disk repository.
    The cartridges are read in the order given (a spanning copy: all of them)."""
    name = options.library or only_library(settings)
    changer = open_library(name, settings)
    status = changer.status()
    plan = [
        Needed(b, None, None, None, name, status.where(b) is not None)
        for b in dict.fromkeys(barcodes)
    ]
    plan = wait_or_refuse(plan, "the cartridges", settings, options)
    with staging_folder(options) as staging:
        master: MasterKey | None = None
        point_id: str | None = None
        packs = read = 0
        for needed in plan:
            with _loaded(changer, needed.barcode) as (drive, _):
                cartridge = _read(drive, needed, master=master, password=password)
                master = cartridge.master
                if point_id is None:
                    point_id = _match_on_cartridge(cartridge, req.point, needed.barcode)
                if point_id not in cartridge.points():
                    raise PointNotFound(
                        f"point {point_id[:8]} is not on cartridge {needed.barcode}"
                    )
                done = _materialize(drive, cartridge, staging, point_id, needed.barcode)
            options.say(_read_line(needed, done.packs_copied, done.bytes_copied))
            packs, read = packs + done.packs_copied, read + done.bytes_copied
            if point_id in done.points:
                break
        else:
            assert point_id is not None
            raise MediaNotFound(
                f"point {point_id[:8]} continues on a cartridge not given: add its barcode "
                "with another --from-media (the copy spans cartridges)"
            )
        assert master is not None
        restored = _restore_staged(staging, master, point_id, req, progress, cancel)
        kept = str(staging) if options.keep_staging else None
        return MediaRestored(restored, point_id, plan, kept, packs, read)


# --- the catalog's part --------------------------------------------------------


def open_catalog(settings: Settings) -> Catalog | None:
    """The configured catalog; None when it is a SQLite file that was never
    made (a restore does not create a catalog)."""
    from strongroom.catalog import Catalog
    from strongroom.catalog.engine import parse_url

    url = parse_url(settings.catalog)
    if url.drivername == "sqlite" and not Path(url.database or "").exists():
        return None
    return Catalog.open(settings.catalog)


def resolve_on_media(catalog: Catalog, ref: str) -> str | None:
    """The full id of the point on media whose id starts with `ref`."""
    found = catalog.match_points(ref.lower())
    if len(found) > 1:
        raise UsageError(f"point prefix {ref} is ambiguous in the media catalog: give more of it")
    return found[0] if found else None


def plan_cartridges(catalog: Catalog, point_id: str, settings: Settings) -> list[Needed]:
    """The cartridges of one copy of the point, in the order to read them.

    Media whose session catalogs list the point are grouped into copies by
    their sessions' continuation links (a spanning copy is one group); the
    copy with the fewest offline cartridges is chosen (then the fewest
    cartridges). Within a copy: by sequence in the pool, then barcode."""
    media = {p.media_id: catalog.get_medium(p.media_id) for p in catalog.find_point(point_id)}
    group = {m: m for m in media}

    def root(m: uuid.UUID) -> uuid.UUID:
        while group[m] != m:
            m = group[m]
        return m

    for medium_id in media:
        for session in catalog.sessions(medium_id):
            if point_id not in session.points:
                continue
            for other in (session.continued_from, session.continues_on):
                if other in media:
                    group[root(other)] = root(medium_id)
    copies: dict[uuid.UUID, list[Medium]] = {}
    for medium_id, medium in media.items():
        copies.setdefault(root(medium_id), []).append(medium)
    statuses = _Statuses(settings)
    options = []
    for members in copies.values():
        members.sort(key=lambda m: (m.label_sequence or 0, m.name))
        options.append([_needed(m, statuses) for m in members])
    options.sort(key=lambda c: (sum(not n.online for n in c), len(c), c[0].barcode))
    return options[0]


def _needed(medium: Medium, statuses: _Statuses) -> Needed:
    status = statuses.get(medium.library)
    online = (
        medium.barcode is not None
        and status is not None
        and status.where(medium.barcode) is not None
    )
    return Needed(
        medium.name,
        medium.media_id,
        medium.pool,
        medium.label_sequence,
        medium.library,
        online,
    )


class _Statuses:
    """Each library's status, read once (a status moves nothing)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: dict[str, ChangerStatus | None] = {}

    def get(self, library: str | None) -> ChangerStatus | None:
        if library is None:
            return None
        if library not in self.seen:
            try:
                self.seen[library] = open_library(library, self.settings).status()
            except MediaError:
                self.seen[library] = None  # gone or unreachable: its media count as offline
        return self.seen[library]


def _restore_planned(
    catalog: Catalog,
    plan: list[Needed],
    point_id: str,
    repo: Repository,
    req: RestoreRequest,
    settings: Settings,
    password: Callable[[], bytes],
    options: MediaOptions,
    progress: ProgressCallback,
    cancel: threading.Event | None,
) -> MediaRestored:
    options.say(f"point {point_id[:8]} is not in the repository; it is on media:")
    for needed in plan:
        options.say(f"  {needed.describe()}")
    plan = wait_or_refuse(plan, f"point {point_id[:8]}", settings, options)
    with staging_folder(options) as staging:
        staged = stage_point(catalog, plan, point_id, repo, staging, password, options, settings)
        restored = _restore_staged(staging, staged.master, point_id, req, progress, cancel)
        kept = str(staging) if options.keep_staging else None
        return MediaRestored(restored, point_id, staged.used, kept, staged.packs, staged.read)


@dataclass
class Staged:
    """What `stage_point` read: the key that opens the staged repository,
    the cartridges used, packs and bytes copied off them."""

    master: MasterKey
    used: list[Needed]
    packs: int
    read: int


def stage_point(
    catalog: Catalog,
    plan: list[Needed],
    point_id: str,
    repo: Repository,
    staging: Path,
    password: Callable[[], bytes],
    options: MediaOptions,
    settings: Settings,
) -> Staged:
    """Read the planned cartridges (all online: `wait_or_refuse` first)
    until `staging` holds the point with every pack it needs, an ordinary
    repository; MediaNotFound when no cartridge holds the rest."""
    master: MasterKey | None = None
    done_point = False
    packs = read = 0
    todo = list(plan)
    used: list[Needed] = []
    while todo and not done_point:
        needed = todo.pop(0)
        changer = open_library(_library_of(needed), settings)
        with _loaded(changer, needed.barcode) as (drive, _):
            mine = master or (repo.master if _ours(catalog, needed, repo) else None)
            secret = password() if mine is None else b""
            cartridge = _read(drive, needed, master=mine, password=secret)
            master = cartridge.master
            done = _materialize(drive, cartridge, staging, point_id, needed.barcode)
        used.append(needed)
        options.say(_read_line(needed, done.packs_copied, done.bytes_copied))
        from strongroom.catalog import Event

        catalog.add_event(
            Event(
                at=_now(),
                kind="restore-read",
                message=f"{needed.barcode} read to restore point {point_id[:8]}",
                library=needed.library,
                barcode=needed.barcode,
                data={"point": point_id, "packs": done.packs_copied},
            )
        )
        packs, read = packs + done.packs_copied, read + done.bytes_copied
        done_point = point_id in done.points
        if not done_point:
            # The point's entry is read: load only the cartridges that hold its missing packs.
            todo = _holding(catalog, done.incomplete.get(point_id, []), todo)
        if not done_point and not todo:
            # The catalog did not link the copy's cartridges: find the rest by pack.
            more = _holders(catalog, done.incomplete.get(point_id, []), used, settings)
            more = wait_or_refuse(more, f"point {point_id[:8]}", settings, options)
            todo.extend(more)
    if not done_point:
        raise MediaNotFound(
            f"point {point_id[:8]}: no cartridge in the catalog holds the rest of its packs"
        )
    assert master is not None
    return Staged(master, used, packs, read)


def _holding(catalog: Catalog, missing: list[bytes], todo: list[Needed]) -> list[Needed]:
    """The cartridges of `todo` (in their order) whose placements hold one
    of the `missing` packs: the point's entry is on every cartridge of its
    copy, so one read says which packs it needs and the others are skipped."""
    holders = {p.media_id for pack in missing for p in catalog.find_pack(pack)}
    return [n for n in todo if n.media_id in holders]


def _holders(
    catalog: Catalog, missing: list[bytes], used: list[Needed], settings: Settings
) -> list[Needed]:
    """Cartridges (not read yet) holding the packs still missing, online ones
    preferred, fewest first."""
    seen = {n.media_id for n in used}
    statuses = _Statuses(settings)
    chosen: dict[uuid.UUID, Needed] = {}
    for pack in missing:
        places = [p for p in catalog.find_pack(pack) if p.media_id not in seen]
        if not places or any(p.media_id in chosen for p in places):
            continue
        candidates = [_needed(catalog.get_medium(p.media_id), statuses) for p in places]
        candidates.sort(key=lambda n: (not n.online, n.sequence or 0, n.barcode))
        chosen[candidates[0].media_id or uuid.uuid4()] = candidates[0]
    return list(chosen.values())


def _ours(catalog: Catalog, needed: Needed, repo: Repository) -> bool:
    if needed.media_id is None:
        return False
    return catalog.get_medium(needed.media_id).repository_id in (None, repo.config.id)


def _library_of(needed: Needed) -> str:
    if needed.library is None:
        raise MediaNotFound(f"cartridge {needed.barcode} is in no library")
    return needed.library


def _now() -> datetime:
    return datetime.now(UTC)


# --- offline cartridges ----------------------------------------------------------


def wait_or_refuse(
    plan: list[Needed], what: str, settings: Settings, options: MediaOptions
) -> list[Needed]:
    """The plan once every cartridge is online: MediaNotFound naming the
    offline ones, or (options.wait) poll the libraries until they are in."""
    offline = [n for n in plan if not n.online]
    if not offline:
        return plan
    names = " ".join(n.barcode for n in offline)
    where = ", ".join(sorted({n.library for n in offline if n.library})) or "a library"
    line = f"{what} needs offline cartridges: {names} (insert them in {where})"
    if not options.wait:
        raise MediaNotFound(line)
    options.say(f"{line}; waiting for them (Ctrl-C to stop)")
    while True:
        time.sleep(options.poll_seconds)
        statuses = _Statuses(settings)
        plan = [n if n.online else _replace_online(n, statuses.get(n.library)) for n in plan]
        if all(n.online for n in plan):
            options.say("every cartridge is in: restoring")
            return plan


def _replace_online(n: Needed, status: ChangerStatus | None) -> Needed:
    online = status is not None and status.where(n.barcode) is not None
    return Needed(n.barcode, n.media_id, n.pool, n.sequence, n.library, online)


# --- one cartridge ------------------------------------------------------------------


@contextmanager
def _loaded(changer: Changer, barcode: str) -> Iterator[tuple[Drive, int]]:
    """The cartridge in a drive (loaded into a free one, or where it already
    is), under the library's lock; unloaded to where it came from afterwards
    (a cartridge found in a drive stays there)."""
    with library_lock(changer, wait=LOCK_SECONDS):
        status = changer.status()
        element = status.where(barcode)
        if element is None:
            raise MediaNotFound(f"cartridge {barcode} is not in library {changer.name}")
        loaded_here = not element.is_drive
        if element.is_drive:
            address = element.address
        else:
            free = [d.address for d in status.drives if not d.full]
            if not free:
                raise ChangerError(f"library {changer.name} has no free drive to read {barcode}")
            address = free[0]
            changer.load(element.address, address)
        try:
            drive = changer.drive(address)
            try:
                yield drive, address
            finally:
                drive.close()
        finally:
            if loaded_here:
                changer.unload(address, element.address)


def _read(drive: Drive, needed: Needed, *, master: MasterKey | None, password: bytes) -> Cartridge:
    """Label and session catalogs, verified; the label must name the barcode
    the changer reads (and the medium the catalog knows)."""
    try:
        if master is not None:
            cartridge = read_cartridge(drive, master=master)
        else:
            cartridge = read_cartridge(drive, password=password)
    except IntegrityError as err:
        raise IntegrityError(f"cartridge {needed.barcode}: {err}") from None
    except MediaError as err:
        raise MediaError(f"cartridge {needed.barcode}: {err}") from None
    label = cartridge.label
    if label.barcode != needed.barcode:
        raise MediaError(
            f"cartridge {needed.barcode} is labelled {label.barcode} (suspect): not read; "
            "run a detailed inventory"
        )
    if needed.media_id is not None and label.media_uuid != str(needed.media_id):
        raise MediaError(
            f"cartridge {needed.barcode} holds media {label.media_uuid}, not the catalog's "
            f"{needed.media_id} (relabelled?): run a detailed inventory"
        )
    return cartridge


def _materialize(
    drive: Drive, cartridge: Cartridge, staging: Path, point_id: str, barcode: str
) -> Materialized:
    try:
        return materialize(drive, cartridge, staging, [point_id])
    except IntegrityError as err:
        raise IntegrityError(f"cartridge {barcode}: {err}") from None
    except PointNotFound as err:
        raise PointNotFound(f"cartridge {barcode}: {err}") from None


def _match_on_cartridge(cartridge: Cartridge, ref: str, barcode: str) -> str:
    found = [p for p in cartridge.points() if p.startswith(ref.lower())]
    if not found:
        raise PointNotFound(f"no point {ref} on cartridge {barcode}")
    if len(found) > 1:
        raise UsageError(f"point prefix {ref} is ambiguous on cartridge {barcode}: give more of it")
    return found[0]


def _read_line(needed: Needed, packs: int, size: int) -> str:
    return f"read {needed.barcode}: {packs} packs, {size} bytes"


# --- staging and the ordinary restore ------------------------------------------------


@contextmanager
def staging_folder(options: MediaOptions) -> Iterator[Path]:
    """A private folder under the data folder, removed afterwards unless kept."""
    home = data_home() / "strongroom" / "staging"
    home.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="restore-", dir=home))  # mode 0700
    try:
        yield folder
    finally:
        if options.keep_staging:
            options.say(f"staging folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _restore_staged(
    staging: Path,
    master: MasterKey,
    point_id: str,
    req: RestoreRequest,
    progress: ProgressCallback,
    cancel: threading.Event | None,
) -> Restored:
    backend = LocalBackend(staging)
    sealed = get_bounded(backend, fmt.CONFIG_NAME, MAX_CONFIG_SIZE)
    config = RepoConfig.decode(Sealer(master.encryption_key).open(sealed, _CONFIG_AD, "config"))
    keys = sorted(o.name for o in backend.list(fmt.KEYS_PREFIX))
    repo = Repository(backend, master, config, keys[0])
    try:
        staged = RestoreRequest(**{**req.__dict__, "point": point_id})
        return restore_point(repo, staged, progress, cancel)
    finally:
        repo.close()


def only_library(settings: Settings) -> str:
    """The one library there is (configured or virtual), for --from-media."""
    names = set(settings.libraries)
    home = libraries_home()
    if home.is_dir():
        names |= {p.name for p in home.iterdir() if (p / "state.json").is_file()}
    if len(names) != 1:
        raise UsageError(
            "--from-media: name the library holding the cartridges with --library"
            + (f" (there are {len(names)})" if names else " (there is none)")
        )
    return names.pop()
