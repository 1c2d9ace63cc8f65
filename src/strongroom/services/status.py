"""`strongroom status`: how each protected source is doing.

Per source of every policy: its last point (id, time, consistency and the
reason it is only crash-consistent), the achieved lag (now minus the last
point's instant: the recovery point objective actually met), the worst gap
between consecutive points over the last day, both judged against the
policy's cycle (late: more than two cycles), the bytes the last cycles
shipped, whether the change tracker is in sync, and the last error.

The points come from the repository for a policy whose destination is the
repository (the truth: a point exists or it does not); the rest comes from
the source's status record (protect/status_record.py) in its state folder,
which the cycle writes. A VHD chain destination has no points to list: its
last point and gaps are the record's successful cycles.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from strongroom.config import Settings
from strongroom.model.point import RecoveryPoint
from strongroom.protect.policy import Policy, PolicySource
from strongroom.protect.source_points import point_consistency, source_points
from strongroom.protect.status_record import StatusRecord, StatusRecordError, read_status
from strongroom.repository.repo import Repository
from strongroom.services.points import list_points
from strongroom.services.policies import load_policies
from strongroom.services.protect import default_state_folder

LATE_CYCLES = 2  # lag beyond this many cycles is reported as late
RECENT_CYCLES = 5  # bytes shipped: the last cycles shown
_DAY = timedelta(days=1)


@dataclass
class LastPoint:
    id: str | None  # None: a VHD chain's cycle (no repository point)
    time: datetime
    consistency: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "consistency": self.consistency,
            "reason": self.reason,
        }


@dataclass
class SourceStatus:
    policy: str
    source: str
    kind: str
    destination: str
    cycle: float
    state_folder: str
    last_point: LastPoint | None = None
    points: int = 0  # points of the source in the repository (None-destinations only)
    lag: float | None = None  # seconds since the last point's instant
    worst_gap: float | None = None  # seconds, consecutive points over the last day
    bytes_shipped: list[int] = field(default_factory=list)  # the last cycles', oldest first
    in_sync: bool | None = None  # None: no record yet
    sync_reason: str = ""
    last_error: tuple[datetime, str] | None = None
    problems: list[str] = field(default_factory=list)  # what could not be read
    record: StatusRecord | None = field(default=None, repr=False)  # the state folder's

    @property
    def late(self) -> bool:
        """No point yet, or the lag is beyond LATE_CYCLES cycles."""
        return self.lag is None or self.lag > LATE_CYCLES * self.cycle

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "kind": self.kind,
            "destination": self.destination,
            "cycle_seconds": self.cycle,
            "state_folder": self.state_folder,
            "last_point": self.last_point.as_dict() if self.last_point else None,
            "points": self.points,
            "lag_seconds": self.lag,
            "worst_gap_seconds": self.worst_gap,
            "late": self.late,
            "bytes_shipped": self.bytes_shipped,
            "tracker_in_sync": self.in_sync,
            "tracker_reason": self.sync_reason,
            "last_error": None
            if self.last_error is None
            else {"time": self.last_error[0].isoformat(), "message": self.last_error[1]},
            "problems": self.problems,
        }


@dataclass
class StatusReport:
    time: datetime
    policies: list[str]
    sources: list[SourceStatus]

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "policies": self.policies,
            "sources": [s.as_dict() for s in self.sources],
        }


def needs_repository(settings: Settings) -> bool:
    """Whether some policy ships into the repository (status then lists its points)."""
    return any(p.destination is None for p in load_policies(settings).values())


def protection_status(
    settings: Settings,
    repo: Repository | None,
    now: datetime,
    *,
    repo_problem: str = "",
    state_folder: Callable[[str], str] = default_state_folder,
    points: list[RecoveryPoint] | None = None,
) -> StatusReport:
    """The status of every source of every policy at `now`. `repo` may be
    None (not needed, or unreachable: `repo_problem` says why). `points`
    (the machine's own points from its backup server, `status --server`)
    replace the repository's."""
    policies = load_policies(settings)
    have_points = repo is not None or points is not None
    if points is None:
        points = list_points(repo, on_damaged=lambda *_: None) if repo is not None else []
    sources = []
    for policy in policies.values():
        for source in policy.sources:
            status = _source_status(policy, source, str(state_folder(source.name)))
            if policy.destination is None:
                if not have_points:
                    status.problems.append(f"repository: {repo_problem or 'not opened'}")
                else:
                    _from_points(status, source_points(points, source.name), now)
            else:
                _from_record_cycles(status, now)
            sources.append(status)
    return StatusReport(now, list(policies), sources)


def _source_status(policy: Policy, source: PolicySource, folder: str) -> SourceStatus:
    status = SourceStatus(
        policy=policy.name,
        source=source.name,
        kind=str(source.kind),
        destination=policy.destination or "repository",
        cycle=policy.cycle,
        state_folder=folder,
    )
    try:
        record = read_status(folder)
    except StatusRecordError as err:
        status.problems.append(str(err))
        record = None
    if record is not None:
        if record.source != source.name:
            status.problems.append(
                f"status record in {folder} is of source {record.source[:80]!r}: ignored"
            )
        else:
            status.in_sync, status.sync_reason = record.in_sync, record.sync_reason
            status.last_error = record.last_error
            status.bytes_shipped = [c.bytes_shipped for c in record.cycles if c.ok][-RECENT_CYCLES:]
            status.record = record
    return status


def _from_points(status: SourceStatus, points: list[RecoveryPoint], now: datetime) -> None:
    status.points = len(points)
    if points:
        last = points[-1]
        consistency, reason = point_consistency(last)
        status.last_point = LastPoint(last.id, last.time, str(consistency), reason)
    _lag_and_gap(status, [p.time for p in points], now)


def _from_record_cycles(status: SourceStatus, now: datetime) -> None:
    record = status.record
    done = [c for c in record.cycles if c.ok] if record is not None else []
    if done:
        last = done[-1]
        status.last_point = LastPoint(
            last.point, last.started, last.consistency or "crash-consistent", last.reason
        )
    _lag_and_gap(status, [c.started for c in done], now)


def _lag_and_gap(status: SourceStatus, times: list[datetime], now: datetime) -> None:
    if not times:
        return
    times = sorted(times)
    status.lag = max(0.0, (now - times[-1]).total_seconds())
    gaps = [
        (later - earlier).total_seconds()
        for earlier, later in itertools.pairwise(times)
        if later >= now - _DAY
    ]
    status.worst_gap = max(gaps) if gaps else None
