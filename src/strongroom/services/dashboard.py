"""What the web dashboard shows of the server's repository: its points
(cached), the sources they make, one folder of a point, and the picked files
of a point as a tar or zip stream.

Contract:
- one repository handle for the server's life, opened once (the key
  derivation is paid once); reading never locks (reading points never
  conflicts with a backup), and `Repository.load_chunk` is thread safe;
- the point list is refreshed at most every `ttl` seconds and
  incrementally: a refresh lists the point ids and reads only the new ones,
  so a page over 10,000 points costs one listing, not 10,000 reads. When
  points appear, a fresh handle with the same key is used from then on, so
  its chunk index (read on first use) knows their packs;
- a damaged point is left out (`check` names it) and not read again;
- with a `memo` (the server's catalog), a point's document is read from the
  repository once per catalog, not once per process start: ids new to the
  view are looked up there first, and what had to be read is kept there. A
  point's id is the hash of its sealed object, so a kept document is never
  stale; the memo is best effort (a catalog failure costs reads, never a page);
- paths from a request are hostile: `checked_path` refuses NUL, relative
  paths, `..` and overlong text (UsageError) before anything is looked up;
- an archive is planned (every picked path found, or PathNotFound) before
  its first byte, then streamed member by member, chunk by chunk: nothing is
  built in memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from strongroom.errors import (
    CatalogError,
    IntegrityError,
    ObjectNotFound,
    PointNotFound,
    StrongroomError,
    UnsupportedVersion,
    UsageError,
)
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint as RecoveryPoint
from strongroom.model.tree import DIR, FILE, SYMLINK, Node
from strongroom.repository.repo import Repository, is_object_hex
from strongroom.services.browse import list_entries
from strongroom.services.dashboard_archive import Member, tar_stream, zip_stream
from strongroom.services.points import load_point, require_files
from strongroom.services.restore import point_path
from strongroom.services.walk import find_node, iter_tree
from strongroom.storage import open_backend

log = logging.getLogger(__name__)

MAX_PATH = 4096
MAX_PICKS = 1000
MAX_FOLDER = 5000  # entries one folder page shows
STALE_AFTER = timedelta(hours=26)  # a daily source one run late: without a known cadence
FAILING_AFTER = timedelta(hours=72)
CADENCE_GAPS = 8  # the gaps between a source's newest points its cadence is taken from


class Health:
    OK = "ok"
    STALE = "stale"
    FAILING = "failing"


def thresholds(expected: timedelta | None) -> tuple[timedelta, timedelta]:
    """(stale after, failing after) for a source that gets a point every
    `expected`: two missed runs make it stale (at least 15 minutes late), six
    failing (at least an hour late); without a known cadence, a daily source's
    STALE_AFTER and FAILING_AFTER. So a protected source cycling every 5 minutes
    is stale after 20 minutes, not a day, and a weekly one not stale after a day."""
    if expected is None or expected <= timedelta(0):
        return STALE_AFTER, FAILING_AFTER
    return (
        max(2 * expected, expected + timedelta(minutes=15)),
        max(6 * expected, expected + timedelta(hours=1)),
    )


def health_of(lag: timedelta, expected: timedelta | None = None) -> str:
    """ok up to the stale threshold since the last point, stale up to the
    failing one, failing beyond (`thresholds`)."""
    stale, failing = thresholds(expected)
    if lag <= stale:
        return Health.OK
    return Health.STALE if lag <= failing else Health.FAILING


def cadence(points: Sequence[RecoveryPoint]) -> timedelta | None:
    """How often a source gets a point: the median gap between its newest
    points (CADENCE_GAPS of them; at least 2 gaps, else None: unknown).
    `points` oldest first."""
    times = [p.time for p in points[-(CADENCE_GAPS + 1) :]]
    gaps = sorted(b - a for a, b in pairwise(times))
    if len(gaps) < 2:
        return None
    return gaps[len(gaps) // 2]


def _recalled(point_id: str, doc: dict[str, Any] | None) -> RecoveryPoint | None:
    """A remembered document as a point; None when absent or unusable (read
    it again from the repository)."""
    if doc is None:
        return None
    try:
        point = RecoveryPoint.from_doc(doc)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, UnsupportedVersion):
        return None  # the repository's copy decides
    if not is_object_hex(point.tree):
        return None
    point.id = point_id
    return point


@dataclass(frozen=True)
class Source:
    """What a series of points protects: one host's paths of one kind."""

    host: str
    paths: tuple[str, ...]
    kind: str
    points: tuple[RecoveryPoint, ...]  # oldest first

    @property
    def key(self) -> str:
        """A short stable name for links and anchors."""
        text = "\0".join([self.host, self.kind, *self.paths])
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]

    @property
    def last(self) -> RecoveryPoint:
        return self.points[-1]

    def lag(self, now: datetime) -> timedelta:
        return max(timedelta(0), now - self.last.time)

    def health(self, now: datetime) -> str:
        """By the lag and the source's own cadence (`cadence`, `thresholds`)."""
        return health_of(self.lag(now), cadence(self.points))


def sources_of(points: Sequence[RecoveryPoint]) -> list[Source]:
    """Points grouped by (host, paths, kind), sorted by host then paths."""
    groups: dict[tuple[str, tuple[str, ...], str], list[RecoveryPoint]] = {}
    for p in points:
        groups.setdefault((p.host, tuple(sorted(p.paths)), str(p.kind)), []).append(p)
    return [
        Source(host, paths, kind, tuple(sorted(found, key=lambda p: (p.time, p.id))))
        for (host, paths, kind), found in sorted(groups.items())
    ]


def point_bytes(point: RecoveryPoint) -> int:
    """The size of what the point holds (files: their bytes; images: the disk)."""
    for name in ("total_bytes", "size"):
        value = point.summary.get(name)
        if isinstance(value, int):
            return value
    return 0


def added_bytes(point: RecoveryPoint) -> int:
    value = point.summary.get("data_added")
    return value if isinstance(value, int) else 0


def checked_path(text: str) -> str:
    """A path of a point as a request gives it: absolute, without NUL or
    `..`, at most MAX_PATH characters; `/a//b/./c` is `/a/b/c`."""
    if len(text) > MAX_PATH or "\0" in text:
        raise UsageError("a path of the point must be under 4096 characters without NUL")
    try:
        return point_path(text)
    except UsageError:
        raise UsageError("give a path of the point from /, without '..'") from None


@dataclass(frozen=True)
class Entry:
    """One entry of a folder of a point."""

    name: str  # printable
    path: str  # the point's path (surrogateescape text)
    type: str  # file, folder, link or other
    size: int
    mtime: datetime | None


@dataclass(frozen=True)
class Folder:
    path: str
    parent: str | None  # None at the root
    entries: list[Entry]
    more: int  # entries not shown (over MAX_FOLDER)


class PointMemo(Protocol):
    """Where point documents read once are kept (catalog/point_memos.py)."""

    def recall_points(self, repository: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...

    def remember_points(self, repository: str, docs: Mapping[str, Mapping[str, Any]]) -> None: ...

    def forget_point_memos(self, repository: str, ids: Iterable[str]) -> None: ...


class RepositoryView:
    """The dashboard's reading of one repository (see the module's contract)."""

    def __init__(
        self,
        location: str,
        password: bytes,
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        memo: PointMemo | None = None,
        background: bool = False,
    ) -> None:
        self._location = location
        self._memo = memo
        self._password = password
        self._ttl = ttl
        self._clock = clock
        self._background = background
        self._lock = threading.Lock()  # the state below; never held across storage I/O
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._refreshing = False
        self._noted: dict[str, tuple[RecoveryPoint, float]] = {}  # committed here, when
        self._index_stale = False  # a noted point's packs: the next reader takes a fresh handle
        self._repo: Repository | None = None
        self._points: dict[str, RecoveryPoint] = {}
        self._damaged: set[str] = set()
        self._sorted: list[RecoveryPoint] = []
        self._checked: float | None = None
        self._sources: tuple[list[RecoveryPoint], list[Source]] | None = None

    def _open(self) -> Repository:
        if self._repo is None:
            backend = open_backend(self._location)
            try:
                self._repo = Repository.open(backend, self._password)
            except BaseException:
                backend.close()
                raise
        return self._repo

    def _fresh_handle(self) -> Repository:
        """A handle with the same key whose index is read anew on first use."""
        with self._lock:
            old = self._open()
        fresh = Repository(open_backend(self._location), old.master, old.config, old.key_name)
        with self._lock:
            self._repo = fresh
        return fresh

    def repository(self) -> Repository:
        with self._lock:
            stale, self._index_stale = self._index_stale, False
            if not stale:
                return self._open()
        return self._fresh_handle()

    def note(self, point: RecoveryPoint) -> None:
        """A point this process just committed (the agents' intake): listed at
        once rather than after the next refresh, and read with a handle whose
        index knows its packs. A refresh whose listing began before the note
        keeps it; the first listing after it decides (a point forgotten since
        goes)."""
        with self._lock:
            self._noted[point.id] = (point, self._clock())
            if point.id not in self._points:
                self._points = {**self._points, point.id: point}
                self._sorted = sorted(self._points.values(), key=lambda p: (p.time, p.id))
            self._index_stale = True
            repo_id = self._repo.config.id if self._repo is not None else None
        if repo_id is not None:
            self._memo_call("remember_points", repo_id, {point.id: point.to_doc()})

    def points(self) -> list[RecoveryPoint]:
        """Every readable point, oldest first (at most `ttl` seconds old; in
        `background` mode, a stale list is answered at once while one refresh
        runs behind it, so no page waits for a listing of the storage)."""
        now = self._clock()
        with self._lock:
            checked = self._checked
            if checked is not None and now - checked < self._ttl:
                return self._sorted
            if checked is not None and self._background:
                if not self._refreshing:
                    self._refreshing = True
                    threading.Thread(
                        target=self._refresh_behind, name="strongroom-points", daemon=True
                    ).start()
                return self._sorted
        self._refresh(now)
        with self._lock:
            return self._sorted

    def _refresh_behind(self) -> None:
        try:
            self._refresh(self._clock())
        except (StrongroomError, OSError) as err:
            log.warning("refreshing the point list: %s", err)
        finally:
            with self._lock:
                self._refreshing = False

    def _refresh(self, now: float) -> None:
        """List the point ids, read the new points (the memo first), drop the
        gone ones; the storage I/O runs outside `_lock`, readers keep the old
        list until the new one is swapped in."""
        with self._refresh_lock:
            with self._lock:
                if self._checked is not None and self._checked >= now:
                    return  # a refresh that began after `now` just ended
                repo = self._open()
                points, damaged = dict(self._points), set(self._damaged)
            ids = set(repo.list_point_ids())
            new = ids - points.keys() - damaged
            gone = points.keys() - ids
            for pid in gone:
                del points[pid]
            damaged &= ids
            if gone:
                self._memo_call("forget_point_memos", repo.config.id, sorted(gone))
            if new:
                repo = self._fresh_handle()
                self._add(repo, new, points, damaged)
            ordered = (
                sorted(points.values(), key=lambda p: (p.time, p.id))
                if new or gone or self._checked is None
                else None
            )
            with self._lock:
                for pid, (point, when) in list(self._noted.items()):
                    if when >= now:  # noted after this listing began: keep it
                        if pid not in points:
                            points[pid] = point
                            ordered = None
                    else:
                        del self._noted[pid]
                if ordered is None and (new or gone or self._checked is None or self._noted):
                    ordered = sorted(points.values(), key=lambda p: (p.time, p.id))
                self._points, self._damaged = points, damaged
                if ordered is not None:
                    self._sorted = ordered
                self._checked = now

    def _add(
        self,
        repo: Repository,
        new: set[str],
        points: dict[str, RecoveryPoint],
        damaged: set[str],
    ) -> None:
        """Take `new` points from the memo, read the rest (in parallel as the
        backend allows: one GET per point on S3) into `points` (`damaged`: the
        ones that do not authenticate), and keep them in the memo."""
        order = sorted(new)
        recalled = self._memo_call("recall_points", repo.config.id, order) or {}
        unread = []
        for pid in order:
            point = _recalled(pid, recalled.get(pid))
            if point is None:
                unread.append(pid)
            else:
                points[pid] = point

        def read(pid: str) -> RecoveryPoint | bool | None:
            try:
                return load_point(repo, pid)
            except ObjectNotFound:
                return None  # forgotten meanwhile
            except IntegrityError:
                return False

        read_now: dict[str, dict[str, Any]] = {}
        if unread:
            workers = max(1, min(repo.backend.capabilities.parallel_requests, len(unread)))
            with ThreadPoolExecutor(workers) as pool:
                for pid, found in zip(unread, pool.map(read, unread), strict=True):
                    if isinstance(found, RecoveryPoint):
                        points[pid] = found
                        read_now[pid] = found.to_doc()
                    elif found is False:
                        damaged.add(pid)
        if read_now:
            self._memo_call("remember_points", repo.config.id, read_now)

    def _memo_call(self, name: str, *args: Any) -> Any:
        """Best effort: a catalog that fails costs reads, never a page."""
        if self._memo is None:
            return None
        try:
            return getattr(self._memo, name)(*args)
        except CatalogError as err:
            log.warning("the catalog's memory of points: %s", err)
            return None

    def point(self, point_id: str, *, fresh: bool = False) -> RecoveryPoint:
        """One point by its full id (PointNotFound otherwise). `fresh`: a
        point missing from the cached list is looked for again in the
        repository (one listing), for a point committed a moment ago."""
        if len(point_id) != 64 or any(c not in "0123456789abcdef" for c in point_id):
            raise PointNotFound("no such recovery point")
        self.points()
        found = self._points.get(point_id)
        if found is None and fresh:
            with self._lock:
                self._checked = None
            self.points()
            found = self._points.get(point_id)
        if found is None:
            raise PointNotFound(f"no recovery point {point_id[:16]}")
        return found

    def sources(self) -> list[Source]:
        """The points' sources, grouped again only when the points changed."""
        points = self.points()
        cached = self._sources
        if cached is None or cached[0] is not points:
            cached = self._sources = (points, sources_of(points))
        return cached[1]

    def folder(self, point_id: str, path: str) -> Folder:
        """One folder of a files point (UsageError for other kinds and for a
        path that is a file; PathNotFound when absent)."""
        point = self.point(point_id)
        _require_browsable(point)
        path = checked_path(path)
        repo = self.repository()
        entries: list[Entry] = []
        more = 0
        for full, node in list_entries(repo, bytes.fromhex(point.tree), path, recursive=False):
            if path != "/" and full == path.encode("utf-8", "surrogateescape"):
                if node.type != DIR:
                    raise UsageError(f"{printable(path)} is not a folder")
                continue
            if len(entries) >= MAX_FOLDER:
                more += 1
                continue
            entries.append(_entry(full, node))
        entries.sort(key=lambda e: (e.type != "folder", e.name))
        parent = None if path == "/" else (path.rsplit("/", 1)[0] or "/")
        return Folder(path, parent, entries, more)

    def archive(self, point_id: str, paths: Sequence[str], fmt: str) -> Iterator[bytes]:
        """The picked paths of a files point (folders with what they hold) as a
        `tar` or `zip` stream. Every path is checked and found before this
        returns; the stream then reads chunk by chunk."""
        if fmt not in ("tar", "zip"):
            raise UsageError("the archive format is tar or zip")
        if not paths:
            raise UsageError("pick at least one file or folder")
        if len(paths) > MAX_PICKS:
            raise UsageError(f"pick at most {MAX_PICKS} files or folders")
        point = self.point(point_id)
        _require_browsable(point)
        repo = self.repository()
        tree = bytes.fromhex(point.tree)
        picked: list[tuple[bytes, Node]] = []
        for text in dict.fromkeys(checked_path(p) for p in paths):
            _, node = find_node(repo, tree, text)  # PathNotFound now, not mid-stream
            if node is None:
                raise UsageError("pick files or folders, not the whole point")
            picked.append((text.encode("utf-8", "surrogateescape"), node))
        members = _members(repo, picked)
        return tar_stream(members) if fmt == "tar" else zip_stream(members)


def _require_browsable(point: RecoveryPoint) -> None:
    if point.kind != PointKind.FILES:
        raise UsageError(
            f"point {point.short_id} is a {printable(str(point.kind))} point: "
            "browse it with 'strongroom ls' (files points only here)"
        )
    require_files(point)


_KINDS = {FILE: "file", DIR: "folder", SYMLINK: "link"}


def _entry(full: bytes, node: Node) -> Entry:
    mtime = datetime.fromtimestamp(node.mtime_ns / 1e9, UTC) if node.mtime_ns else None
    return Entry(
        name=printable(node.name.decode("utf-8", "surrogateescape")),
        path=full.decode("utf-8", "surrogateescape"),
        type=_KINDS.get(node.type, "other"),
        size=sum(node.chunk_sizes) if node.type == FILE else node.size,
        mtime=mtime,
    )


def _members(repo: Repository, picked: list[tuple[bytes, Node]]) -> Iterator[Member]:
    """Each picked entry, and what a picked folder holds, once each."""
    seen: set[bytes] = set()
    for base, node in picked:
        walk: Iterator[tuple[bytes, Node]] = iter([(base, node)])
        if node.type == DIR and node.subtree is not None:
            walk = _chain(base, node, iter_tree(repo, node.subtree, base))
        for path, entry in walk:
            if path in seen or entry.type not in (FILE, DIR, SYMLINK):
                continue
            seen.add(path)
            yield Member(repo, path.lstrip(b"/"), entry)


def _chain(
    base: bytes, node: Node, rest: Iterator[tuple[bytes, Node]]
) -> Iterator[tuple[bytes, Node]]:
    yield base, node
    yield from rest
