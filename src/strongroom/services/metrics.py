"""What `/metrics` reports, read at scrape time from the catalog and the
repository: the same numbers from every server process sharing them
(process-local counters, the HTTP requests, are server/metrics.py's).

- jobs by kind and state: the catalog's `jobs` table;
- per source (a host/paths group, as `forget` groups points: services/
  forget.py's label `host=H paths=A:B`): the number of points, the bytes
  of its newest point (what it protects), the time of its newest point and
  the lag (seconds since then);
- whether the catalog and the repository could be read (`up`).

Listing the repository's points reads every point object, so a snapshot
is kept for `cache_seconds` (scrapes are every 15-60 s; two at once share
one reading).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from strongroom.catalog import Catalog
from strongroom.errors import StrongroomError
from strongroom.model.point import RecoveryPoint
from strongroom.services.forget import group_points
from strongroom.services.points import list_points
from strongroom.services.session import LockMode, open_repository

log = logging.getLogger(__name__)
MAX_LABEL = 200


@dataclass(frozen=True)
class SourceFigures:
    points: int
    newest_bytes: int
    newest: datetime


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    jobs: dict[tuple[str, str], int]  # (kind, state) -> count
    sources: dict[str, SourceFigures]
    catalog_up: bool
    repository_up: bool


def point_bytes(point: RecoveryPoint) -> int:
    """What a point protects: its files' bytes, or an image's size."""
    for name in ("total_bytes", "size"):
        value = point.summary.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def source_figures(points: list[RecoveryPoint]) -> dict[str, SourceFigures]:
    out: dict[str, SourceFigures] = {}
    for label, members in group_points(points, "host,paths").items():
        newest = max(members, key=lambda p: p.time)
        out[label[:MAX_LABEL]] = SourceFigures(len(members), point_bytes(newest), newest.time)
    return out


@dataclass
class Metrics:
    catalog: Catalog
    location: str
    password: bytes
    cache_seconds: float = 15.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # The server passes its shared, incrementally refreshed point list (the
    # dashboard's RepositoryView): a scrape then reads only new points.
    points: Callable[[], list[RecoveryPoint]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sources: tuple[float, dict[str, SourceFigures], bool] | None = None

    def snapshot(self) -> Snapshot:
        try:
            jobs, catalog_up = self.catalog.count_jobs(), True
        except StrongroomError as err:
            log.warning("metrics: %s", err)
            jobs, catalog_up = {}, False
        sources, repository_up = self._read_sources()
        return Snapshot(self.clock(), jobs, sources, catalog_up, repository_up)

    def _read_sources(self) -> tuple[dict[str, SourceFigures], bool]:
        with self._lock:  # one reading at a time; the others wait and share it
            cached = self._sources
            if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
                return cached[1], cached[2]
            try:
                if self.points is not None:
                    figures = source_figures(self.points())
                else:
                    with open_repository(self.location, self.password, lock=LockMode.NONE) as repo:
                        figures = source_figures(list_points(repo, on_damaged=lambda *_: None))
                up = True
            except StrongroomError as err:
                log.warning("metrics: repository: %s", err)
                figures, up = {}, False
            self._sources = (time.monotonic(), figures, up)
            return figures, up
