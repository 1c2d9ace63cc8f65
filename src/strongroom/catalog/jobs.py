"""Jobs, schedules, maintenance locks and sign-in limits in the catalog
(revision 0004): the `Catalog` methods the server's operations use.

Contract:
- `claim_job` hands a queued, due job to exactly one claimer however many
  processes ask at once. PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED`
  picks a row no other transaction holds, then a guarded UPDATE takes it.
  SQLite: every transaction begins IMMEDIATE (engine.py), so claimers are
  serialised and the guarded `UPDATE ... WHERE state = 'queued'` is atomic.
  The UPDATE's guard holds on both: a claim is a row changed, or nothing.
- `heartbeat_job` and `finish_job` change a job only for the worker that
  holds it (`claimed_by`, state running): a worker whose job was taken back
  (its heartbeat stopped) learns it from their False and stops.
- `fire_schedule` turns one due time of a schedule into one job: the
  schedule's `next_due` moves only from the value the caller read (a
  compare-and-set), and the job's (schedule, due) is unique. Two processes
  firing the same due time make one job; the other gets None.
- `hold_advisory_lock` (PostgreSQL) keeps a session-level
  `pg_try_advisory_lock` on a connection of its own for the duration: a
  dead process's connection drops and its lock with it.
  `take_lease`/`renew_lease`/`drop_lease` (any backend) are a lease row that
  another holder may take once it expired.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from strongroom.catalog import convert
from strongroom.catalog.engine import one_line
from strongroom.catalog.records import AuditEntry, Event
from strongroom.catalog.schema import (
    audit_log,
    events,
    jobs,
    maintenance_locks,
    schedules,
    sign_in_limits,
)
from strongroom.errors import CatalogError

MAX_OUTCOME = 2000
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Job:
    kind: str
    spec: dict[str, Any]
    due: datetime
    created: datetime
    machine: str | None = None  # None: a job of the server itself
    state: JobState = JobState.QUEUED
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    heartbeat: datetime | None = None
    finished: datetime | None = None
    outcome: str | None = None
    progress: dict[str, Any] | None = None
    tries: int = 0
    schedule_id: int | None = None
    id: int | None = None


@dataclass(frozen=True)
class Schedule:
    """A job to run every `every_seconds`, or at a `calendar` time
    (services/scheduler.py parses it); exactly one of the two is set."""

    name: str
    kind: str
    next_due: datetime
    spec: dict[str, Any] = field(default_factory=dict)
    machine: str | None = None
    every_seconds: int | None = None
    calendar: str | None = None
    enabled: bool = True
    id: int | None = None


@dataclass(frozen=True)
class SignInLimit:
    key: str
    failures: int
    window_start: datetime
    blocked_until: datetime | None


def check_kind(kind: str) -> str:
    if not _KIND.fullmatch(kind):
        raise CatalogError(f"catalog: job kind {kind[:40]!r} is not 1-32 of a-z, 0-9, -")
    return kind


def _job(row: sa.Row[Any]) -> Job:
    m = row._mapping
    return Job(
        kind=m["kind"],
        spec=dict(m["spec"]),
        due=m["due"],
        created=m["created"],
        machine=m["machine"],
        state=JobState(m["state"]),
        claimed_by=m["claimed_by"],
        claimed_at=m["claimed_at"],
        heartbeat=m["heartbeat"],
        finished=m["finished"],
        outcome=m["outcome"],
        progress=None if m["progress"] is None else dict(m["progress"]),
        tries=int(m["tries"]),
        schedule_id=m["schedule_id"],
        id=int(m["id"]),
    )


def _schedule(row: sa.Row[Any]) -> Schedule:
    m = row._mapping
    return Schedule(
        name=m["name"],
        kind=m["kind"],
        next_due=m["next_due"],
        spec=dict(m["spec"]),
        machine=m["machine"],
        every_seconds=m["every_seconds"],
        calendar=m["calendar"],
        enabled=bool(m["enabled"]),
        id=int(m["id"]),
    )


def _job_values(job: Job) -> dict[str, Any]:
    return {
        "kind": check_kind(job.kind),
        "machine": job.machine,
        "spec": dict(job.spec),
        "state": str(job.state),
        "created": job.created,
        "due": job.due,
        "tries": job.tries,
        "schedule_id": job.schedule_id,
        "progress": job.progress,
    }


def _machine_is(machine: str | None) -> sa.ColumnElement[bool]:
    return jobs.c.machine.is_(None) if machine is None else jobs.c.machine == machine


def advisory_key(name: str) -> int:
    """A lock name as PostgreSQL's 64-bit advisory lock key (signed)."""
    digest = hashlib.sha256(b"strongroom maintenance " + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class JobsMixin:
    """Mixed into `Catalog` (catalog.py)."""

    if TYPE_CHECKING:
        _engine: sa.Engine
        _url: sa.URL
        where: str

        def transaction(self) -> Any: ...

    # --- jobs ----------------------------------------------------------------

    def add_job(self, job: Job) -> Job:
        with self.transaction() as c:
            new = c.execute(jobs.insert().values(**_job_values(job))).inserted_primary_key
            return self.get_job(int(new[0]))

    def get_job(self, job_id: int) -> Job:
        with self.transaction() as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise CatalogError(f"catalog: no job {job_id}")
        return _job(row)

    def find_job(self, job_id: int) -> Job | None:
        with self.transaction() as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        return None if row is None else _job(row)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        kind: str | None = None,
        machine: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first (by id); `before`: only ids below it (paging)."""
        query = sa.select(jobs)
        if state is not None:
            query = query.where(jobs.c.state == str(state))
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        if machine is not None:
            query = query.where(jobs.c.machine == machine)
        if before is not None:
            query = query.where(jobs.c.id < before)
        with self.transaction() as c:
            rows = c.execute(query.order_by(jobs.c.id.desc()).limit(limit)).all()
        return [_job(r) for r in rows]

    def count_jobs(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> how many jobs."""
        query = sa.select(jobs.c.kind, jobs.c.state, sa.func.count()).group_by(
            jobs.c.kind, jobs.c.state
        )
        with self.transaction() as c:
            return {(r[0], r[1]): int(r[2]) for r in c.execute(query)}

    def claim_job(
        self, worker: str, kinds: Sequence[str], machine: str | None, now: datetime
    ) -> Job | None:
        """The oldest due queued job of `kinds` for `machine` (None: the
        server's own), now running for `worker`; None when there is none."""
        if not kinds:
            return None
        pick = (
            sa.select(jobs.c.id)
            .where(
                jobs.c.state == str(JobState.QUEUED),
                jobs.c.due <= now,
                jobs.c.kind.in_(list(kinds)),
                _machine_is(machine),
            )
            .order_by(jobs.c.due, jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite: nothing (serialised)
        )
        with self.transaction() as c:
            job_id = c.scalar(pick)
            if job_id is None:
                return None
            taken = c.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == str(JobState.QUEUED))
                .values(
                    state=str(JobState.RUNNING),
                    claimed_by=worker,
                    claimed_at=now,
                    heartbeat=now,
                    tries=jobs.c.tries + 1,
                )
            )
            if taken.rowcount != 1:
                return None
            return self.get_job(int(job_id))

    def heartbeat_job(
        self, job_id: int, worker: str, now: datetime, progress: dict[str, Any] | None = None
    ) -> bool:
        """False: the job is no longer this worker's (taken back, cancelled)."""
        values: dict[str, Any] = {"heartbeat": now}
        if progress is not None:
            values["progress"] = progress
        with self.transaction() as c:
            done = c.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.claimed_by == worker,
                    jobs.c.state == str(JobState.RUNNING),
                )
                .values(**values)
            )
        return bool(done.rowcount == 1)

    def finish_job(
        self, job_id: int, worker: str, state: JobState, outcome: str, now: datetime
    ) -> bool:
        """Done or failed, by the worker that holds it; False otherwise."""
        if state not in (JobState.DONE, JobState.FAILED):
            raise CatalogError(f"catalog: a job finishes done or failed, not {state}")
        with self.transaction() as c:
            done = c.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.claimed_by == worker,
                    jobs.c.state == str(JobState.RUNNING),
                )
                .values(state=str(state), outcome=outcome[:MAX_OUTCOME], finished=now)
            )
        return bool(done.rowcount == 1)

    def release_job(
        self, job_id: int, worker: str, due: datetime, outcome: str, now: datetime
    ) -> bool:
        """The worker gives its job back to the queue, due again at `due`
        (a lock was busy); False when it was not the worker's."""
        with self.transaction() as c:
            done = c.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.claimed_by == worker,
                    jobs.c.state == str(JobState.RUNNING),
                )
                .values(
                    state=str(JobState.QUEUED),
                    claimed_by=None,
                    heartbeat=None,
                    due=due,
                    outcome=outcome[:MAX_OUTCOME],
                )
            )
        return bool(done.rowcount == 1)

    def cancel_job(self, job_id: int, now: datetime) -> bool:
        """A queued job only (a running one belongs to its worker)."""
        with self.transaction() as c:
            done = c.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == str(JobState.QUEUED))
                .values(state=str(JobState.CANCELLED), finished=now, outcome="cancelled")
            )
        return bool(done.rowcount == 1)

    def take_back_stale_jobs(
        self, stale_before: datetime, max_tries: int, now: datetime
    ) -> list[Job]:
        """Running jobs whose heartbeat is older than `stale_before`: queued
        again, or failed once they were tried `max_tries` times. Returns
        them as they are now (each changed by exactly one caller)."""
        changed: list[Job] = []
        with self.transaction() as c:
            stale = c.execute(
                sa.select(jobs.c.id, jobs.c.tries, jobs.c.claimed_by)
                .where(jobs.c.state == str(JobState.RUNNING), jobs.c.heartbeat < stale_before)
                .with_for_update(skip_locked=True)
            ).all()
            for row in stale:
                guard = (
                    jobs.c.id == row.id,
                    jobs.c.state == str(JobState.RUNNING),
                    jobs.c.heartbeat < stale_before,
                )
                if row.tries >= max_tries:
                    values: dict[str, Any] = {
                        "state": str(JobState.FAILED),
                        "finished": now,
                        "outcome": f"its worker {row.claimed_by} stopped; tried {row.tries} times",
                    }
                else:
                    values = {"state": str(JobState.QUEUED), "claimed_by": None, "heartbeat": None}
                if c.execute(jobs.update().where(*guard).values(**values)).rowcount == 1:
                    changed.append(self.get_job(int(row.id)))
        return changed

    # --- schedules -----------------------------------------------------------

    def add_schedule(self, schedule: Schedule) -> Schedule:
        check_kind(schedule.kind)
        with self.transaction() as c:
            if c.scalar(sa.select(schedules.c.id).where(schedules.c.name == schedule.name)):
                raise CatalogError(f"catalog: schedule {schedule.name[:64]} already exists")
            c.execute(schedules.insert().values(**_schedule_values(schedule)))
            return self.get_schedule(schedule.name)

    def find_schedule(self, name: str) -> Schedule | None:
        with self.transaction() as c:
            row = c.execute(sa.select(schedules).where(schedules.c.name == name)).first()
        return None if row is None else _schedule(row)

    def get_schedule(self, name: str) -> Schedule:
        found = self.find_schedule(name)
        if found is None:
            raise CatalogError(f"catalog: no schedule {name[:64]}")
        return found

    def list_schedules(self, *, enabled: bool | None = None) -> list[Schedule]:
        query = sa.select(schedules)
        if enabled is not None:
            query = query.where(schedules.c.enabled.is_(enabled))
        with self.transaction() as c:
            return [_schedule(r) for r in c.execute(query.order_by(schedules.c.name))]

    def update_schedule(self, schedule: Schedule) -> Schedule:
        """Store every field of `schedule` (found by its id)."""
        check_kind(schedule.kind)
        with self.transaction() as c:
            done = c.execute(
                schedules.update()
                .where(schedules.c.id == schedule.id)
                .values(**_schedule_values(schedule))
            )
            if done.rowcount != 1:
                raise CatalogError(f"catalog: no schedule {schedule.name[:64]}")
            return self.get_schedule(schedule.name)

    def remove_schedule(self, name: str) -> bool:
        with self.transaction() as c:
            return bool(c.execute(schedules.delete().where(schedules.c.name == name)).rowcount == 1)

    def fire_schedule(self, schedule: Schedule, next_due: datetime, job: Job) -> Job | None:
        """Move `schedule` from the `next_due` it was read with to
        `next_due` and queue `job` (its schedule and due set by the caller),
        in one transaction; None when another process fired it first."""
        with self.transaction() as c:
            moved = c.execute(
                schedules.update()
                .where(schedules.c.id == schedule.id, schedules.c.next_due == schedule.next_due)
                .values(next_due=next_due)
            )
            if moved.rowcount != 1:
                return None
            new = c.execute(jobs.insert().values(**_job_values(job))).inserted_primary_key
            return self.get_job(int(new[0]))

    # --- maintenance locks ---------------------------------------------------

    @contextmanager
    def hold_advisory_lock(self, name: str) -> Iterator[bool]:
        """PostgreSQL only: True while this process holds the session-level
        advisory lock `name` on a connection kept for the block; False (and
        nothing held) when another session has it."""
        if self._engine.dialect.name != "postgresql":
            raise CatalogError("catalog: advisory locks need PostgreSQL")
        key = advisory_key(name)
        try:
            connection = self._engine.connect()
        except sa.exc.SQLAlchemyError as err:
            raise CatalogError(f"catalog {self.where}: {one_line(err, self._url)}") from None
        try:
            got = bool(connection.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
            connection.commit()  # the lock is the session's; no transaction left open
            try:
                yield got
            finally:
                if got:
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    connection.commit()
        except sa.exc.SQLAlchemyError as err:
            connection.invalidate()  # a broken connection never goes back to the pool
            raise CatalogError(f"catalog {self.where}: {one_line(err, self._url)}") from None
        finally:
            connection.close()

    def take_lease(self, name: str, holder: str, expires: datetime, now: datetime) -> str | None:
        """Hold the lease `name` until `expires` if it is free, expired or
        already `holder`'s: None. Otherwise the holder that has it."""
        with self.transaction() as c:
            row = c.execute(
                sa.select(maintenance_locks)
                .where(maintenance_locks.c.name == name)
                .with_for_update()
            ).first()
            if row is None:
                c.execute(
                    maintenance_locks.insert().values(name=name, holder=holder, expires=expires)
                )
                return None
            if row.holder != holder and row.expires > now:
                return str(row.holder)
            c.execute(
                maintenance_locks.update()
                .where(maintenance_locks.c.name == name)
                .values(holder=holder, expires=expires)
            )
            return None

    def renew_lease(self, name: str, holder: str, expires: datetime) -> bool:
        """False: the lease is no longer `holder`'s."""
        with self.transaction() as c:
            done = c.execute(
                maintenance_locks.update()
                .where(maintenance_locks.c.name == name, maintenance_locks.c.holder == holder)
                .values(expires=expires)
            )
        return bool(done.rowcount == 1)

    def drop_lease(self, name: str, holder: str) -> None:
        with self.transaction() as c:
            c.execute(
                maintenance_locks.delete().where(
                    maintenance_locks.c.name == name, maintenance_locks.c.holder == holder
                )
            )

    # --- pages of the audit log and the events, for the API ----------------

    def audit_page(self, *, limit: int, before: int | None = None) -> list[AuditEntry]:
        """Newest first (by id); `before`: only rows with a smaller id."""
        query = sa.select(audit_log)
        if before is not None:
            query = query.where(audit_log.c.id < before)
        with self.transaction() as c:
            rows = c.execute(query.order_by(audit_log.c.id.desc()).limit(limit)).all()
        return [
            AuditEntry(r.at, r.action, r.target, r.outcome, r.user_name, r.address, r.id)
            for r in rows
        ]

    def events_page(
        self, *, limit: int, before: int | None = None, kind: str | None = None
    ) -> list[Event]:
        """Newest first (by id); `before`: only events with a smaller id."""
        query = sa.select(events)
        if before is not None:
            query = query.where(events.c.id < before)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self.transaction() as c:
            rows = c.execute(query.order_by(events.c.id.desc()).limit(limit)).all()
        return [convert.event(r) for r in rows]

    # --- sign-in limits ------------------------------------------------------

    def get_sign_in_limits(self, keys: Sequence[str]) -> list[SignInLimit]:
        with self.transaction() as c:
            rows = c.execute(sa.select(sign_in_limits).where(sign_in_limits.c.key.in_(keys)))
            return [SignInLimit(r.key, r.failures, r.window_start, r.blocked_until) for r in rows]

    def count_sign_in_failure(
        self, key: str, now: datetime, window_start_after: datetime, block_at: int,
        blocked_until: datetime,
    ) -> SignInLimit:  # fmt: skip
        """One more failure for `key`: a window older than
        `window_start_after` starts again at `now`; at `block_at` failures the
        key is blocked until `blocked_until` (and its count restarts)."""
        with self.transaction() as c:
            row = c.execute(
                sa.select(sign_in_limits).where(sign_in_limits.c.key == key).with_for_update()
            ).first()
            if row is None or row.window_start <= window_start_after:
                failures, start = 1, now
            else:
                failures, start = int(row.failures) + 1, row.window_start
            until = row.blocked_until if row is not None else None
            if failures >= block_at:
                failures, start, until = 0, now, blocked_until
            values = {"failures": failures, "window_start": start, "blocked_until": until}
            if row is None:
                c.execute(sign_in_limits.insert().values(key=key, **values))
            else:
                c.execute(
                    sign_in_limits.update().where(sign_in_limits.c.key == key).values(**values)
                )
            return SignInLimit(key, failures, start, until)

    def clear_sign_in_limit(self, key: str) -> None:
        with self.transaction() as c:
            c.execute(sign_in_limits.delete().where(sign_in_limits.c.key == key))


def _schedule_values(schedule: Schedule) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "kind": schedule.kind,
        "machine": schedule.machine,
        "spec": dict(schedule.spec),
        "every_seconds": schedule.every_seconds,
        "calendar": schedule.calendar,
        "next_due": schedule.next_due,
        "enabled": schedule.enabled,
    }
