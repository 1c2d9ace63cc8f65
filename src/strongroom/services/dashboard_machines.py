"""What the dashboard's Machines and Jobs pages show: each enrolled machine
with its last point, lag, health and schedules, and the jobs with their
progress (docs/server.md, "Dashboard").

Health of a machine is its newest point's (services/dashboard.py's rule),
or `never` when it has made none yet. "Back up now" backs up what the
machine's first files backup schedule names, else the paths of its newest files
point: nothing is typed in a browser for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from strongroom.catalog import Catalog, Job, JobState, Machine, Schedule
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.services.dashboard import RepositoryView, health_of

JOBS_PAGE = 100


@dataclass(frozen=True)
class MachineRow:
    machine: Machine
    last_point: RecoveryPoint | None
    schedules: list[Schedule]
    backup_paths: list[str]  # what "Back up now" backs up (empty: nothing known)

    def lag(self, now: datetime) -> timedelta | None:
        return None if self.last_point is None else max(timedelta(0), now - self.last_point.time)

    def health(self, now: datetime) -> str:
        """By the lag and the machine's most frequent enabled interval schedule
        (calendar schedules and none: the daily default thresholds)."""
        lag = self.lag(now)
        if lag is None:
            return "never"
        every = [s.every_seconds for s in self.schedules if s.enabled and s.every_seconds]
        return health_of(lag, timedelta(seconds=min(every)) if every else None)


def machine_rows(catalog: Catalog, view: RepositoryView) -> list[MachineRow]:
    points = view.points()  # oldest first
    newest: dict[str, RecoveryPoint] = {}
    newest_files: dict[str, RecoveryPoint] = {}
    for p in points:
        newest[p.host] = p
        if p.kind == PointKind.FILES:
            newest_files[p.host] = p
    schedules: dict[str, list[Schedule]] = {}
    for s in catalog.list_schedules():
        if s.machine is not None:
            schedules.setdefault(s.machine, []).append(s)
    rows = []
    for m in catalog.list_machines():
        own = schedules.get(m.name, [])
        files_backups = (
            s for s in own if s.kind == "backup" and s.spec.get("kind", "files") == "files"
        )
        paths = next((list(s.spec.get("paths", [])) for s in files_backups), [])
        if not paths and m.name in newest_files:
            paths = list(newest_files[m.name].paths)
        rows.append(MachineRow(m, newest.get(m.name), own, paths))
    return rows


def enrolled(catalog: Catalog, host: str) -> bool:
    """Whether `host` is an enrolled, enabled machine (a point's host)."""
    found = catalog.find_machine(host) if 0 < len(host) <= 64 else None
    return found is not None and not found.disabled


def cluster_machines(catalog: Catalog, cluster: str) -> list[str]:
    """The enrolled, enabled machines of the VM cluster `cluster` (a VM
    point's host): those a VM point may be restored to."""
    return [m.name for m in catalog.list_machines() if m.cluster == cluster and not m.disabled]


@dataclass(frozen=True)
class JobRow:
    job: Job

    @property
    def progress(self) -> dict[str, Any]:
        return self.job.progress or {}

    @property
    def done(self) -> int:
        value = self.progress.get("bytes", 0)
        return value if isinstance(value, int) and value >= 0 else 0

    @property
    def total(self) -> int | None:
        """The progress bar's maximum, when the agent knows it."""
        value = self.progress.get("bytes_total")
        return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class JobPage:
    """One page of the Jobs page, newest first: `older` is the `before` of the
    next page (None: this is the last), `filters` what chose the rows."""

    rows: list[JobRow]
    older: int | None
    filters: dict[str, str]
    before: str = ""

    def query(self, before: str | int | None = "") -> str:
        """`?state=...&machine=...&before=...` of what is set ("" when nothing):
        the page's own with `before` "", another page's with its `before`."""
        chosen = {k: v for k, v in self.filters.items() if v}
        if before:
            chosen["before"] = str(before)
        return "?" + urlencode(chosen) if chosen else ""


def job_rows(catalog: Catalog, *, before: str = "", state: str = "", machine: str = "") -> JobPage:
    """JOBS_PAGE jobs below id `before` (keyset paging: new jobs do not shift
    the pages), of one state and one machine if given; values that are not an
    id, a state or a machine name choose nothing (an empty page), never an error."""
    states = {str(s) for s in JobState}
    filters = {"state": state, "machine": machine}
    if (before and not (before.isdigit() and len(before) <= 18)) or (state and state not in states):
        return JobPage([], None, filters, before)
    found = catalog.list_jobs(
        state=JobState(state) if state else None,
        machine=machine[:64] or None,
        before=int(before) if before else None,
        limit=JOBS_PAGE + 1,
    )
    rows = [JobRow(j) for j in found[:JOBS_PAGE]]
    older = rows[-1].job.id if len(found) > JOBS_PAGE and rows else None
    return JobPage(rows, older, filters, before)
