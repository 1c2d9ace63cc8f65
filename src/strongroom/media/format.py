"""Reading a cartridge (docs/format.md §16): its label, its sessions, and
what a restore needs, materialized as an ordinary repository folder.

    file 0        label (label.py)
    file 1        session 1 data: session header record, then framed packs
    file 2        session 1 catalog (sealed; session.py)
    file 3, 4     session 2 data, catalog ... then the end of data

Files are recognised by their first record, never by their number alone: a
session whose writer died has a data file and no catalog after it, and the
next session (appended after a file mark) starts one file earlier than a
fixed layout would say. Such a session is reported as truncated and skipped;
the sessions before and after it stay readable.

Nothing here trusts the tape: the label and every catalog are authenticated
with the repository's key, each pack must hash to the id the catalog names,
and a damaged record is an IntegrityError naming its file and record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from strongroom.errors import (
    EndOfData,
    IntegrityError,
    MediaError,
    PointNotFound,
    WrongPassword,
)
from strongroom.media.drive import Drive, Position
from strongroom.media.label import Label, LabelReading, read_label, verify_label
from strongroom.media.session import (
    CATALOG_MAGIC,
    FRAME_SIZE,
    CatalogPoint,
    PackPlace,
    SessionCatalog,
    SessionHeader,
    open_catalog,
    parse_catalog_file,
    parse_frame,
)
from strongroom.media.tape_io import RecordReader
from strongroom.repository import format as fmt
from strongroom.repository.crypto import Sealer, content_hash
from strongroom.repository.entries import PackedChunk
from strongroom.repository.keys import (
    KDF_BUDGET,
    MasterKey,
    open_key_file,
    parse_key_file,
)
from strongroom.repository.pack import PackScan, read_stored_header
from strongroom.repository.repo import RepoConfig, Repository
from strongroom.storage.local import LocalBackend

_CONFIG_AD = b"config"  # as repository/repo.py seals the config object
PIECE = 8 << 20  # bytes of a pack handled at once when copying it off the tape


@dataclass
class RawSession:
    """A session as found on the tape, before any key is used."""

    number: int
    data_file: int
    header: SessionHeader
    catalog_file: int | None = None
    key_files: list[bytes] = field(default_factory=list)
    sealed: bytes = b""
    problem: str = ""  # why the session cannot be read ("" if it may)


@dataclass
class Scan:
    reading: LabelReading
    sessions: list[RawSession]
    other_files: list[int]  # files that are neither a session's data nor its catalog
    near_end: bool = False  # the data ends past the early warning (a full cartridge)


def scan(drive: Drive) -> Scan:
    """Read the label and walk every file (one record of each data file, the
    whole of each catalog file). No key needed; a blank or foreign-format
    cartridge gives its label reading and no sessions."""
    reading = read_label(drive)
    if reading.state is not None:
        return Scan(reading, [], [])
    sessions: list[RawSession] = []
    others: list[int] = []
    pending: RawSession | None = None
    file = 1
    while True:
        try:
            drive.locate(Position(file, 0))
            record = drive.read_record()
        except EndOfData:
            break
        header = None if record is None else SessionHeader.parse(record)
        if header is not None:
            if pending is not None:
                sessions.append(_truncated(pending))
            pending = RawSession(header.session, file, header)
        elif record is not None and record.startswith(CATALOG_MAGIC) and pending is not None:
            pending.catalog_file = file
            reader = RecordReader(drive, Position(file, 0), f"session {pending.number} catalog")
            drive.locate(Position(file, 0))
            try:
                pending.key_files, pending.sealed = parse_catalog_file(reader.read)
            except IntegrityError as err:
                pending.problem = f"its catalog is unreadable: {err}"
            sessions.append(pending)
            pending = None
        else:
            if pending is not None:
                sessions.append(_truncated(pending))
                pending = None
            others.append(file)
        file += 1
    if pending is not None:
        sessions.append(_truncated(pending))
    return Scan(reading, sessions, others, near_end=drive.near_end)


def _truncated(session: RawSession) -> RawSession:
    session.problem = "truncated: no session catalog after its data (the writer stopped)"
    return session


def unlock(found: Scan, password: bytes) -> MasterKey:
    """The master key from the key files the cartridge's catalogs carry, as a
    repository is opened: hostile key files are bounded before any
    derivation, cheapest first, within the same KDF budget. WrongPassword if
    none opens; MediaError if the cartridge holds no key file at all."""
    blobs: dict[bytes, bytes] = {}
    for session in found.sessions:
        for blob in session.key_files:
            blobs.setdefault(content_hash(blob), blob)
    keys = []
    for digest, blob in blobs.items():
        try:
            keys.append(parse_key_file(blob, f"key file {digest.hex()[:16]} on the cartridge"))
        except IntegrityError:
            continue
    if not keys:
        raise MediaError("the cartridge holds no usable key file (no readable session catalog)")
    keys.sort(key=lambda k: k.params.work)
    spent = 0
    for key in keys:
        if spent and spent + key.params.work > KDF_BUDGET:
            break
        spent += key.params.work
        try:
            return open_key_file(key, password)
        except WrongPassword:
            continue
    raise WrongPassword("wrong password: no key file on the cartridge opens with it")


@dataclass
class Session:
    raw: RawSession
    catalog: SessionCatalog | None
    problem: str = ""

    @property
    def number(self) -> int:
        return self.raw.number


@dataclass
class Cartridge:
    """A cartridge read and verified with the key."""

    label: Label
    master: MasterKey
    sessions: list[Session]
    other_files: list[int]
    near_end: bool = False  # as Scan.near_end: the writer would change cartridges here

    @property
    def good(self) -> list[SessionCatalog]:
        return [s.catalog for s in self.sessions if s.catalog is not None]

    def points(self) -> dict[str, CatalogPoint]:
        """Every point any readable session holds (packs merged over sessions)."""
        merged: dict[str, CatalogPoint] = {}
        for catalog in self.good:
            for point in catalog.points:
                seen = merged.get(point.id)
                packs = point.packs if seen is None else tuple({*seen.packs, *point.packs})
                merged[point.id] = CatalogPoint(point.id, point.sealed, packs)
        return merged

    def places(self) -> dict[bytes, PackPlace]:
        """Where each pack on this cartridge lies (the first copy if several)."""
        out: dict[bytes, PackPlace] = {}
        for catalog in self.good:
            for place in catalog.packs:
                out.setdefault(place.pack_id, place)
        return out


def read_cartridge(
    drive: Drive, *, master: MasterKey | None = None, password: bytes | None = None
) -> Cartridge:
    """Label and sessions, verified: with `master` (the repository is open) or
    `password` (the cartridge alone: its catalogs carry the key files).

    MediaError if file 0 is no strongroom label; IntegrityError if the label
    does not verify with the key. A session whose catalog is missing or does
    not verify is listed with its problem; the others stay readable."""
    found = scan(drive)
    if found.reading.state is not None:
        raise MediaError(
            f"not a strongroom cartridge ({found.reading.state}): {found.reading.reason}"
        )
    if master is None:
        if password is None:
            raise ValueError("read_cartridge needs the master key or the password")
        master = unlock(found, password)
    label = verify_label(found.reading, master)
    sealer = Sealer(master.encryption_key)
    sessions = []
    for raw in found.sessions:
        if raw.problem:
            sessions.append(Session(raw, None, raw.problem))
            continue
        try:
            catalog = open_catalog(raw.sealed, raw.key_files, sealer, label.media_id, raw.number)
            if (
                catalog.data_file != raw.data_file
                or catalog.job != raw.header.job
                or raw.header.media_id != label.media_id
                or catalog.repository_id != label.repository_id
            ):
                raise IntegrityError("its catalog does not describe the data file before it")
        except IntegrityError as err:
            sessions.append(Session(raw, None, str(err)))
            continue
        sessions.append(Session(raw, catalog))
    return Cartridge(label, master, sessions, found.other_files, found.near_end)


@dataclass
class Materialized:
    """What `materialize` left in the target folder."""

    points: list[str]  # requested and whole in the folder (this call or an earlier one)
    incomplete: dict[str, list[bytes]]  # point -> packs on other cartridges
    packs_copied: int = 0
    bytes_copied: int = 0


def materialize(
    drive: Drive,
    cartridge: Cartridge,
    target: str | Path,
    points: list[str] | None = None,
) -> Materialized:
    """Make `target` a local repository (storage/local.py layout) holding the
    points (all on the cartridge by default): config and key files as stored,
    the packs the points need that this cartridge has, an index file of them
    (from the packs' own sealed headers, §8), and each point whose packs are
    then all in the folder. Call it again with the next cartridge of a
    spanning copy: packs already in the folder are not copied again, and a
    point appears once its last pack has arrived.

    PointNotFound if a requested point is on no readable session; a damaged
    pack is an IntegrityError naming its file and records, and nothing of it
    is left in the folder."""
    held = cartridge.points()
    wanted = list(held) if points is None else points
    for point_id in wanted:
        if point_id not in held:
            raise PointNotFound(f"point {point_id[:8]} is in no readable session on the cartridge")
    catalog = next(iter(cartridge.good), None)
    if catalog is None:
        raise MediaError("the cartridge has no readable session")
    backend = LocalBackend(target)
    try:
        return _materialize(drive, cartridge, backend, catalog.config, wanted)
    finally:
        backend.close()


def _materialize(
    drive: Drive, cartridge: Cartridge, backend: LocalBackend, config_blob: bytes, wanted: list[str]
) -> Materialized:
    held = cartridge.points()
    sealer = Sealer(cartridge.master.encryption_key)
    config = _put_config(backend, config_blob, sealer, cartridge.label.repository_id)
    key_name = _put_keys(backend, [s.raw.key_files for s in cartridge.sessions if s.catalog])
    repo = Repository(backend, cartridge.master, config, key_name)
    places = cartridge.places()
    result = Materialized([], {})
    indexed: dict[bytes, list[PackedChunk]] = {}
    try:
        for pack_id in sorted({p for pid in wanted for p in held[pid].packs}):
            name = fmt.pack_name(pack_id.hex())
            place = places.get(pack_id)
            if place is None or backend.exists(name):
                continue
            result.bytes_copied += _copy_pack(drive, place, backend)
            result.packs_copied += 1
            indexed[pack_id] = _pack_entries(backend, name, place.length, sealer)
    finally:  # packs copied before a failure are indexed: a retry skips them
        if indexed:
            repo.write_index_file(indexed)
    for point_id in wanted:
        point = held[point_id]
        missing = [p for p in point.packs if not backend.exists(fmt.pack_name(p.hex()))]
        if missing:
            result.incomplete[point_id] = missing
            continue
        if not backend.exists(fmt.point_name(point_id)):
            backend.put(fmt.point_name(point_id), point.sealed)  # last: §2's write order
        result.points.append(point_id)
    return result


def _put_config(backend: LocalBackend, sealed: bytes, sealer: Sealer, repo_id: str) -> RepoConfig:
    config = RepoConfig.decode(sealer.open(sealed, _CONFIG_AD, "config on the cartridge"))
    if config.id != repo_id:
        raise IntegrityError("the config on the cartridge is another repository's")
    if backend.exists(fmt.CONFIG_NAME):
        present = backend.get(fmt.CONFIG_NAME)
        there = RepoConfig.decode(sealer.open(present, _CONFIG_AD, f"config in {backend.root}"))
        if there.id != repo_id:
            raise MediaError(f"{backend.root} holds another repository")
    else:
        backend.create(fmt.CONFIG_NAME, sealed)
    return config


def _put_keys(backend: LocalBackend, groups: list[list[bytes]]) -> str:
    first = ""
    for blob in (b for group in groups for b in group):
        name = fmt.key_name(content_hash(blob).hex())
        if not backend.exists(name):
            backend.create(name, blob)
        first = first or name
    return first


def _copy_pack(drive: Drive, place: PackPlace, backend: LocalBackend) -> int:
    """Copy one pack off the tape into data/, checking frame and hash."""
    start = Position(place.file, place.record)
    last = place.record + place.records - 1
    where = f"pack {place.pack_id.hex()[:16]} (file {place.file}, records {place.record}-{last})"
    drive.locate(start)
    reader = RecordReader(drive, start, where)
    at = f"file {place.file}, record {place.record}"
    pack_id, length = parse_frame(reader.read(FRAME_SIZE), at)
    if pack_id != place.pack_id or length != place.length:
        raise IntegrityError(f"{at}: the frame names another pack than the catalog")
    temp = backend.open_temp()
    try:

        def read(offset: int, size: int) -> bytes:
            data = reader.read(min(size, place.length - offset))
            temp.write(data)
            return data

        digest = PackScan(read, place.length, PIECE).digest()
        if digest != place.pack_id:
            raise IntegrityError(f"{where} does not hash to its id (damaged)")
        temp.commit(fmt.pack_name(place.pack_id.hex()))
    except BaseException:
        temp.abort()
        raise
    return place.length


def _pack_entries(backend: LocalBackend, name: str, size: int, sealer: Sealer) -> list[PackedChunk]:
    entries = read_stored_header(
        lambda offset, length: backend.get_range(name, offset, length), size, sealer, name
    )
    return [PackedChunk(e.chunk_id, e.offset, e.length, e.raw_length, int(e.type)) for e in entries]
