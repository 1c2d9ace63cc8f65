"""Writing one session to a cartridge (docs/format.md §16.3): the packs of
the points, streamed from the repository a piece at a time, then the sealed
session catalog.

Spanning rule: packs are never split across cartridges. When the drive
reports the early warning (`near_end`) or the end of the medium while a pack
is being written, that pack is abandoned on this cartridge (its records stay
but the catalog does not name it) and the session ends cleanly: file mark,
catalog, file mark, in the room the early warning keeps. The summary's
`deferred` lists that pack first, then the ones not started: the caller
writes them (`packs=deferred`, same `job`, `continued_from` = this media id)
as a session on the next cartridge. A pack whose stored bytes do not hash
to its name is left out of the catalog and reported in `damaged`.

If even the catalog does not fit (a drive with no early warning), the
session has no catalog (a truncated session to every reader) and EndOfMedium
is raised: none of its packs count as written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from strongroom.errors import EndOfMedium, IntegrityError, MediaError
from strongroom.media.drive import Drive, Position
from strongroom.media.format import scan
from strongroom.media.label import MediaClass, classify
from strongroom.media.session import (
    FRAME_SIZE,
    MAX_KEY_FILES,
    MAX_PACK_LENGTH,
    CatalogPoint,
    PackPlace,
    SessionCatalog,
    SessionHeader,
    encode_catalog_file,
    encode_frame,
)
from strongroom.media.tape_io import RecordWriter
from strongroom.model.point import RecoveryPoint
from strongroom.repository import format as fmt
from strongroom.repository.crypto import content_hash
from strongroom.repository.keys import MAX_KEY_FILE_SIZE
from strongroom.repository.pack import PackScan
from strongroom.repository.repo import MAX_CONFIG_SIZE, MAX_POINT_SIZE, Repository
from strongroom.storage.base import get_bounded

# The chunks a point needs: services.walk.referenced_by_points has this shape
# (media may not import services or pipeline, so the caller hands it in).
Reach = Callable[[Repository, list[RecoveryPoint]], tuple[set[bytes], list[str]]]
PIECE = 8 << 20  # bytes of a pack read from storage at once


@dataclass
class SessionWritten:
    """What one session put on the cartridge, in the catalog's terms."""

    media_id: bytes
    session: int
    data_file: int
    catalog_file: int
    job: bytes
    points: dict[str, tuple[bytes, ...]]  # point id -> every pack it needs
    packs: list[PackPlace] = field(default_factory=list)  # complete on this cartridge
    deferred: list[bytes] = field(default_factory=list)  # for the next cartridge, in order
    damaged: list[bytes] = field(default_factory=list)
    records: int = 0
    bytes_written: int = 0
    ended_early: bool = False  # the cartridge filled: `deferred` must go elsewhere

    @property
    def media_uuid(self) -> str:
        return str(uuid.UUID(bytes=self.media_id))

    def rows(self) -> list[tuple[str, int, str, str, int, int, int]]:
        """(media id, session, point id, pack id, file, first record, records)
        for each point and each of its packs on this cartridge."""
        here = {p.pack_id: p for p in self.packs}
        return [
            (self.media_uuid, self.session, pid, pack.hex(), p.file, p.record, p.records)
            for pid, packs in self.points.items()
            for pack in packs
            if (p := here.get(pack)) is not None
        ]


class _Full(Exception):
    """The early warning came while a pack was being written."""


def point_packs(
    repo: Repository, point_ids: Sequence[str], reach: Reach
) -> dict[str, tuple[bytes, ...]]:
    """Every pack each point needs (manifests and data), from the index."""
    out = {}
    for point_id in point_ids:
        doc = repo.load_point(point_id)
        try:
            point = RecoveryPoint.from_doc(doc)
        except (ValueError, TypeError, KeyError) as err:
            raise IntegrityError(f"point {point_id[:8]} is malformed: {err}") from None
        chunks, errors = reach(repo, [point])
        if errors:
            raise IntegrityError(f"point {point_id[:8]}: {errors[0]}")
        out[point_id] = tuple(sorted({repo.locate(c).pack for c in chunks}))
    return out


def write_session(
    drive: Drive,
    repo: Repository,
    point_ids: Sequence[str],
    *,
    reach: Reach,
    packs: Sequence[bytes] | None = None,
    job: bytes | None = None,
    continued_from: bytes | None = None,
    now: float | None = None,
) -> SessionWritten:
    """Append a session holding `point_ids` to the cartridge in `drive`.

    `packs`: exactly the packs to write, in order (a continuation's
    `deferred`, or what other cartridges lack); default every pack the points
    need. The catalog records the points and all their packs either way, so
    a reader knows what else it needs. MediaError if the cartridge is not
    labelled for this repository."""
    found = scan(drive)
    verdict = classify(found.reading, repo.config.id, repo.master)
    if verdict.media_class is not MediaClass.OURS or verdict.label is None:
        why = verdict.reason or verdict.media_class
        raise MediaError(f"the cartridge is not labelled for this repository ({why})")
    label = verdict.label
    needs = point_packs(repo, point_ids, reach)
    order = list(packs) if packs is not None else sorted({p for ps in needs.values() for p in ps})
    sealed_points = [_sealed_point(repo, pid, needs[pid]) for pid in point_ids]
    keys = _key_files(repo)
    config = get_bounded(repo.backend, fmt.CONFIG_NAME, MAX_CONFIG_SIZE)

    drive.space_to_end_of_data()
    end = drive.position()
    if end.record:  # a writer died inside a file: close it, it reads as truncated
        drive.write_filemark()
        end = Position(end.file + 1, 0)
    number = max((s.number for s in found.sessions), default=0) + 1
    if number > 0xFFFFFFFF:  # session headers are unauthenticated: bound before encoding
        raise MediaError(
            f"cartridge {label.barcode} claims session {number - 1}, the last a cartridge "
            "can hold: nothing written; relabel it"
        )
    job = job or uuid.uuid4().bytes
    started = int(time.time() if now is None else now)
    out = SessionWritten(label.media_id, number, end.file, end.file + 1, job, needs)

    data = RecordWriter(drive)
    data.write(SessionHeader(label.media_id, number, job, started).encode())
    data.pad()
    for i, pack_id in enumerate(order):
        if drive.near_end:
            out.deferred = list(order[i:])
            break
        first = data.records
        try:
            good = _write_pack(repo, data, drive, pack_id)
        except (_Full, EndOfMedium):
            out.deferred = list(order[i:])
            break
        if good is None:
            out.damaged.append(pack_id)
            continue
        out.packs.append(PackPlace(pack_id, end.file, first, data.records - first, good))
    out.ended_early = bool(out.deferred)
    catalog = SessionCatalog(
        repository_id=repo.config.id,
        media_id=label.media_id,
        session=number,
        sequence=label.sequence,
        job=job,
        time=started,
        record_size=drive.record_size,
        data_file=end.file,
        config=config,
        key_hashes=[content_hash(k) for k in keys],
        points=sealed_points,
        packs=out.packs,
        deferred=out.deferred,
        continued_from=continued_from,
    )
    blob = encode_catalog_file(catalog, keys, repo.sealer)
    try:
        drive.write_filemark()
        cat = RecordWriter(drive)
        cat.write(blob)
        cat.pad()
        drive.write_filemark()
    except EndOfMedium:
        raise EndOfMedium(
            f"no room for session {number}'s catalog on cartridge {label.barcode}: "
            "nothing of this session counts as written"
        ) from None
    out.records = data.records + cat.records
    out.bytes_written = out.records * drive.record_size
    return out


def _write_pack(repo: Repository, out: RecordWriter, drive: Drive, pack_id: bytes) -> int | None:
    """Frame and stream one pack; its length, or None if its bytes do not hash
    to its name. _Full (or EndOfMedium) if the cartridge fills before its end."""
    name = fmt.pack_name(pack_id.hex())
    size = repo.backend.size(name)
    if size > MAX_PACK_LENGTH:
        raise IntegrityError(f"{name} is larger than a pack can be ({size} bytes)")
    unit_end = out.accepted + FRAME_SIZE + size  # the pack is whole once this is on tape

    def watch() -> None:
        if drive.near_end and out.flushed < unit_end:
            raise _Full()

    def read(offset: int, length: int) -> bytes:
        piece = repo.backend.get_range(name, offset, length)
        out.write(piece)
        return piece

    out.after_record = watch
    try:
        out.write(encode_frame(pack_id, size))
        digest = PackScan(read, size, PIECE).digest()
        out.pad()
    finally:
        out.after_record = None
    return size if digest == pack_id else None


def _sealed_point(repo: Repository, point_id: str, packs: tuple[bytes, ...]) -> CatalogPoint:
    sealed = get_bounded(repo.backend, fmt.point_name(point_id), MAX_POINT_SIZE)
    if content_hash(sealed).hex() != point_id:
        raise IntegrityError(f"point {point_id[:8]} does not match its name (damaged)")
    return CatalogPoint(point_id, sealed, packs)


def _key_files(repo: Repository) -> list[bytes]:
    """The repository's key files as stored (the one in use first), so the
    cartridge alone and any of their passwords open it."""
    names = sorted(o.name for o in repo.backend.list(fmt.KEYS_PREFIX))
    names.sort(key=lambda n: n != repo.key_name)
    keys = []
    for name in names[:MAX_KEY_FILES]:
        blob = get_bounded(repo.backend, name, MAX_KEY_FILE_SIZE)
        if content_hash(blob).hex() == fmt.pack_hex_from_name(name):
            keys.append(blob)
    return keys
