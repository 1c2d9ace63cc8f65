"""The media jobs a server process runs itself: `copy-to-media` (points to
the media of a pool, services/copy_to_media.py) and `restore-from-media`
(a point that lives only on media brought back INTO the repository).

Why "back into the repository": a server restores nothing to a folder of
its own that anyone could use; what agents and the dashboard restore from
is the repository. So the server reads the cartridges the point needs
(services/media_restore.stage_point: under each library's lock, labels
checked, packs hashed) into a private staging folder under its data folder,
then adds what the repository lacks in the write order of §2: the packs
first, then an index file of them (from the packs' own sealed headers),
then the point object last. A job killed half way leaves at most packs that
no point uses (the next prune reclaims them), never a point without its
data. The repository's shared lock is held throughout, so a prune (which
takes it exclusively) cannot remove the packs before the point names them.
Only this repository's cartridges are used: a foreign cartridge would need
another password, which a server job does not have (the CLI's
`restore --from-media` does that).

A spec is checked by `check_media_spec` when queued and again when it runs;
every field is bounded (ids hex, at most MAX_POINTS of them, library and
pool names plain), and UsageError names the first problem, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from strongroom.catalog import Catalog, Job
from strongroom.config import Settings
from strongroom.errors import MediaError, PointNotFound, UsageError
from strongroom.repository import format as fmt
from strongroom.repository.crypto import Sealer
from strongroom.repository.entries import PackedChunk
from strongroom.repository.pack import read_stored_header
from strongroom.repository.repo import Repository
from strongroom.services.copy_to_media import copy_to_media
from strongroom.services.forget import group_points
from strongroom.services.jobs import Handler, Jobs, Progress
from strongroom.services.media_pools import library_name, open_changer
from strongroom.services.media_restore import (
    MediaOptions,
    plan_cartridges,
    resolve_on_media,
    stage_point,
    staging_folder,
    wait_or_refuse,
)
from strongroom.services.points import PointFilter, find_point, list_points
from strongroom.services.session import LockMode, open_repository
from strongroom.storage.local import LocalBackend
from strongroom.types import Progress as Totals

MEDIA_KINDS = ("copy-to-media", "restore-from-media")
MAX_POINTS = 256
MAX_LISTED = 100  # points on media only, shown on the dashboard
MAX_ITEMS = 64
MAX_ITEM = 4096
_HEX = re.compile(r"[0-9a-f]{8,64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a pool or library, never a path
_COPY = {"pool", "library", "points", "latest", "hosts", "paths"}
_RESTORE = {"point", "library"}


def _name(kind: str, field: str, value: Any, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise UsageError(f"{kind}: {field} is 1-128 of letters, digits, '.', '_', '-'")
    return value


def _point(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise UsageError(f"{kind}: a point id is 8-64 lowercase hex digits")
    return value


def _texts(kind: str, field: str, items: Any) -> list[str]:
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise UsageError(f"{kind}: {field} must be a list of at most {MAX_ITEMS} texts")
    for item in items:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_ITEM or "\0" in item:
            raise UsageError(f"{kind}: each of {field} must be 1-{MAX_ITEM} characters")
    return list(items)


def check_media_spec(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of a media job, checked, with its defaults.

    copy-to-media: `pool`; either `points` (1..MAX_POINTS ids or unique
    prefixes) or `latest: true` (the newest point of each host/paths
    series, narrowed by `hosts`/`paths`); `library` optional (default: the
    one the pool's media are in). restore-from-media: `point`, `library`
    ignored for planning but checked (the catalog says where each cartridge is)."""
    allowed = _COPY if kind == "copy-to-media" else _RESTORE
    if kind not in MEDIA_KINDS:
        raise UsageError(f"the server runs only {', '.join(MEDIA_KINDS)} media jobs")
    unknown = set(spec) - allowed
    if unknown:
        # the fields it takes, not the ones given: a request's text is never echoed
        raise UsageError(f"{kind}: unknown field(s); it takes {', '.join(sorted(allowed))}")
    library = _name(kind, "library", spec.get("library"), False)
    if kind == "restore-from-media":
        return {"point": _point(kind, spec.get("point")), "library": library}
    pool = _name(kind, "pool", spec.get("pool"), True)
    points = spec.get("points", [])
    if not isinstance(points, list) or len(points) > MAX_POINTS:
        raise UsageError(f"{kind}: points must be a list of at most {MAX_POINTS} ids")
    latest = spec.get("latest", False)
    if not isinstance(latest, bool):
        raise UsageError(f"{kind}: latest is true or false")
    if bool(points) == latest:
        raise UsageError(f"{kind}: give either points or latest: true")
    return {
        "pool": pool,
        "library": library,
        "points": list(dict.fromkeys(_point(kind, p) for p in points)),
        "latest": latest,
        "hosts": _texts(kind, "hosts", spec.get("hosts", [])),
        "paths": _texts(kind, "paths", spec.get("paths", [])),
    }


def queue_media_job(catalog: Catalog, kind: str, spec: Mapping[str, Any]) -> Job:
    """Queue a media job with a checked spec (the dashboard's forms; the
    API goes through services/operations.py, which checks the same way)."""
    return Jobs(catalog).enqueue(kind, check_media_spec(kind, spec))


@dataclass(frozen=True)
class OnMediaOnly:
    """A point the media catalog lists and the repository does not hold."""

    point_id: str
    barcodes: list[str]
    online: bool  # one of its cartridges is in a library


def points_on_media_only(
    catalog: Catalog, present: set[str], limit: int = MAX_LISTED
) -> list[OnMediaOnly]:
    """At most `limit` points on media (by id) that are not in `present`."""
    found: list[OnMediaOnly] = []
    for first in "0123456789abcdef":
        for point_id in catalog.match_points(first, limit=limit + len(present)):
            if point_id in present:
                continue
            placed = catalog.find_point(point_id)
            names = sorted({p.barcode or str(p.media_id) for p in placed})
            found.append(OnMediaOnly(point_id, names, any(p.online for p in placed)))
            if len(found) >= limit:
                return found
    return found


def media_handlers(
    catalog: Catalog, location: str, password: bytes, settings: Settings
) -> dict[str, Handler]:
    """The `copy-to-media` and `restore-from-media` handlers."""

    def copy(job: Job, progress: Progress) -> str:
        spec = check_media_spec("copy-to-media", job.spec)
        pool = spec["pool"]
        name = library_name(settings, catalog, spec["library"], pool)
        changer = open_changer(settings, name)
        with open_repository(location, password, lock=LockMode.SHARED) as repo:
            ids = _chosen(repo, spec)
            if not ids:
                return "no point matches: nothing copied"

            def report(totals: Totals) -> None:
                progress(
                    {
                        "bytes": totals.bytes_done,
                        "of": totals.bytes_total,
                        "cartridge": totals.current[:64],
                    }
                )

            result = copy_to_media(catalog, changer, repo, ids, pool, progress=report)
        text = (
            f"copied {len(result.written)} point(s) to pool {pool} "
            f"({result.bytes_written} bytes on {len(result.cartridges)} cartridge(s))"
        )
        if result.skipped:
            text += f"; {len(result.skipped)} already there"
        if result.damaged:
            text += f"; {len(result.damaged)} damaged pack(s) left out"
        return text

    def restore(job: Job, progress: Progress) -> str:
        spec = check_media_spec("restore-from-media", job.spec)
        with open_repository(location, password, lock=LockMode.SHARED) as repo:
            point_id = resolve_on_media(catalog, spec["point"])
            if point_id is None:
                raise PointNotFound(f"point {spec['point'][:8]} is not in the media catalog")
            if repo.backend.exists(fmt.point_name(point_id)):
                return f"point {point_id[:8]} is already in the repository"
            lines: list[str] = []

            def say(line: str) -> None:
                lines.append(line)
                progress({"step": line[:200], "cartridges": len(lines)})

            options = MediaOptions(say=say)
            plan = plan_cartridges(catalog, point_id, settings)
            plan = wait_or_refuse(plan, f"point {point_id[:8]}", settings, options)
            with staging_folder(options) as staging:
                staged = stage_point(
                    catalog, plan, point_id, repo, staging, _foreign, options, settings
                )
                packs = adopt(repo, staging, point_id)
        return (
            f"brought point {point_id[:8]} back from {len(staged.used)} cartridge(s): "
            f"{packs} pack(s) added to the repository"
        )

    return {"copy-to-media": copy, "restore-from-media": restore}


def _chosen(repo: Repository, spec: dict[str, Any]) -> list[str]:
    if not spec["latest"]:
        return list(dict.fromkeys(find_point(repo, p).id for p in spec["points"]))
    flt = PointFilter(spec["hosts"], [], spec["paths"])
    groups = group_points(list_points(repo, flt, on_damaged=_skip), "host,paths")
    return [max(members, key=lambda p: p.time).id for members in groups.values()]


def _skip(_point: str, _err: Exception) -> None:
    """A damaged point is not copied by `latest`."""


def _foreign() -> bytes:
    raise MediaError(
        "the point is on another repository's cartridges: restore it with "
        "'strongroom restore --from-media'"
    )


def adopt(repo: Repository, staging: Path, point_id: str) -> int:
    """Add to `repo` the packs of the staged repository it lacks, an index
    file of them, then the point (last); returns how many packs were added.
    The staged repository is this one's (its cartridges opened with this
    repository's key), so the objects are stored as they are."""
    staged = LocalBackend(staging)
    sealer = Sealer(repo.master.encryption_key)
    added: dict[bytes, list[PackedChunk]] = {}
    try:
        for info in staged.list(fmt.DATA_PREFIX):
            if repo.backend.exists(info.name):
                continue
            entries = read_stored_header(
                partial(staged.get_range, info.name), info.size, sealer, info.name
            )
            repo.backend.put(info.name, staged.get(info.name))  # one pack: bounded in size
            added[bytes.fromhex(fmt.pack_hex_from_name(info.name))] = [
                PackedChunk(e.chunk_id, e.offset, e.length, e.raw_length, int(e.type))
                for e in entries
            ]
        if added:
            repo.write_index_file(added)
        name = fmt.point_name(point_id)
        repo.backend.put(name, staged.get(name))  # last: §2's write order
    finally:
        staged.close()
    return len(added)
