"""What the server's operations API does, as plain JSON documents: jobs
(listed, queued, cancelled), schedules (administered), the audit log and
the events, each paged newest first by id (`limit`, `before`).

Contract: inputs are checked here (names, kinds, specs, schedule times)
and a bad one raises UsageError with one line that never echoes it; a
missing schedule or job is None / False, for the API's 404; the catalog's
failures are CatalogError (the API's 503).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.catalog import AuditEntry, Catalog, Event, JobState, Schedule
from strongroom.config import Settings
from strongroom.errors import UsageError
from strongroom.services.jobs import Jobs, job_doc
from strongroom.services.scheduler import (
    Scheduler,
    ServerLoops,
    check_when,
    first_run,
    worker_name,
)
from strongroom.services.server_jobs import SERVER_KINDS, check_spec, maintenance_handlers
from strongroom.services.server_media_jobs import MEDIA_KINDS, check_media_spec, media_handlers

MAX_PAGE = 500
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
_EVENT_KIND = re.compile(r"[\x21-\x7e]{1,64}")


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def schedule_doc(schedule: Schedule) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "kind": schedule.kind,
        "machine": schedule.machine,
        "spec": schedule.spec,
        "every": schedule.every_seconds,
        "calendar": schedule.calendar,
        "next_due": _when(schedule.next_due),
        "enabled": schedule.enabled,
    }


def audit_doc(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": _when(entry.at),
        "user": entry.user,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "address": entry.address,
    }


def event_doc(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": _when(event.at),
        "kind": event.kind,
        "severity": str(event.severity),
        "message": event.message,
        "library": event.library,
        "barcode": event.barcode,
        "data": event.data,
    }


def check_schedule_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError("a schedule name is 1-64 of letters, digits, '.', '_', '@', '-'")
    return name


# Checks the spec of a job an agent runs (services/agent_jobs.py):
# (kind, machine, spec, scheduled=...) -> the checked spec, or UsageError.
AgentSpecs = Callable[..., dict[str, Any]]


def _no_agents(*_args: Any, **_kw: Any) -> dict[str, Any]:
    raise UsageError("this server runs no agent jobs")


@dataclass
class Operations:
    catalog: Catalog
    jobs: Jobs
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    agent_specs: AgentSpecs = _no_agents

    def _checked(
        self, kind: str, machine: str | None, spec: Mapping[str, Any], scheduled: bool = False
    ) -> dict[str, Any]:
        if kind in SERVER_KINDS:
            if machine is not None:
                raise UsageError(f"a {kind} job runs on the server: no machine")
            return check_spec(kind, spec)
        if kind in MEDIA_KINDS:
            if machine is not None:
                raise UsageError(f"a {kind} job runs on the server: no machine")
            return check_media_spec(kind, spec)
        return self.agent_specs(kind, machine, spec, scheduled=scheduled)

    # --- jobs ----------------------------------------------------------------

    def submit(
        self, kind: str, spec: Mapping[str, Any], machine: str | None = None
    ) -> dict[str, Any]:
        """Queue a job to run now: a server job (forget, prune,
        copy-to-media, restore-from-media), or a job of
        an enrolled machine's agent (backup, restore)."""
        checked = self._checked(kind, machine, spec)
        return job_doc(self.jobs.enqueue(kind, checked, machine=machine))

    def list_jobs(
        self, *, state: str | None, kind: str | None, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        if kind is not None and not _KIND.fullmatch(kind):
            return []  # no job has such a kind
        found = self.catalog.list_jobs(
            state=JobState(state) if state is not None else None,
            kind=kind,
            before=before,
            limit=min(limit, MAX_PAGE),
        )
        return [job_doc(j) for j in found]

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        found = self.catalog.find_job(job_id)
        return None if found is None else job_doc(found)

    def cancel_job(self, job_id: int) -> bool:
        """A queued job; False when it is not (any more) queued."""
        return self.jobs.cancel(job_id)

    # --- schedules -----------------------------------------------------------

    def list_schedules(self) -> list[dict[str, Any]]:
        return [schedule_doc(s) for s in self.catalog.list_schedules()]

    def get_schedule(self, name: str) -> dict[str, Any] | None:
        found = self.catalog.find_schedule(name) if _NAME.fullmatch(name) else None
        return None if found is None else schedule_doc(found)

    def add_schedule(
        self,
        name: str,
        kind: str,
        spec: Mapping[str, Any],
        *,
        every: int | None = None,
        calendar: str | None = None,
        enabled: bool = True,
        machine: str | None = None,
    ) -> dict[str, Any] | None:
        """None when the name is taken. With `machine`: a backup that
        machine's agent runs."""
        check_schedule_name(name)
        check_when(every, calendar)
        checked = self._checked(kind, machine, spec, scheduled=True)
        if self.catalog.find_schedule(name) is not None:
            return None
        schedule = Schedule(
            name=name,
            kind=kind,
            next_due=first_run(every, calendar, self.clock()),
            spec=checked,
            machine=machine,
            every_seconds=every,
            calendar=calendar,
            enabled=enabled,
        )
        return schedule_doc(self.catalog.add_schedule(schedule))

    def change_schedule(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """`changes`: any of spec, every, calendar, enabled (giving `every`
        drops `calendar` and the reverse; a new time, or enabling it again,
        restarts `next_due` from now).
        None when there is no such schedule."""
        current = self.catalog.find_schedule(name) if _NAME.fullmatch(name) else None
        if current is None:
            return None
        every, calendar = current.every_seconds, current.calendar
        if changes.get("every") is not None:
            every, calendar = int(changes["every"]), None
        if changes.get("calendar") is not None:
            every, calendar = None, str(changes["calendar"])
        check_when(every, calendar)
        spec = current.spec
        if changes.get("spec") is not None:
            spec = self._checked(current.kind, current.machine, changes["spec"], True)
        enabled = current.enabled if changes.get("enabled") is None else bool(changes["enabled"])
        next_due = current.next_due
        retimed = (every, calendar) != (current.every_seconds, current.calendar)
        if retimed or (enabled and not current.enabled):  # no "missed" runs while it was off
            next_due = first_run(every, calendar, self.clock())
        changed = dataclasses.replace(
            current,
            spec=spec,
            every_seconds=every,
            calendar=calendar,
            next_due=next_due,
            enabled=enabled,
        )
        return schedule_doc(self.catalog.update_schedule(changed))

    def remove_schedule(self, name: str) -> bool:
        return bool(_NAME.fullmatch(name)) and self.catalog.remove_schedule(name)

    # --- the audit log and the events ---------------------------------------

    def audit_page(self, *, limit: int, before: int | None) -> list[dict[str, Any]]:
        return [audit_doc(a) for a in self.catalog.audit_page(limit=min(limit, MAX_PAGE),
                                                               before=before)]  # fmt: skip

    def events_page(
        self, *, limit: int, before: int | None, kind: str | None
    ) -> list[dict[str, Any]]:
        if kind is not None and not _EVENT_KIND.fullmatch(kind):
            return []  # no event has such a kind
        found = self.catalog.events_page(limit=min(limit, MAX_PAGE), before=before, kind=kind)
        return [event_doc(e) for e in found]


def server_operations(
    catalog: Catalog,
    location: str,
    password: bytes,
    *,
    worker: str | None = None,
    agent_specs: AgentSpecs = _no_agents,
    settings: Settings | None = None,
) -> tuple[Operations, ServerLoops]:
    """The operations of one server process over its catalog and
    repository: the API's service, and the scheduler and job runner loops
    (not started). `agent_specs` checks the jobs of agents; `settings`
    name the media libraries of the media jobs (default: the environment's)."""
    name = worker or worker_name()
    handlers = maintenance_handlers(catalog, location, password, name)
    handlers.update(media_handlers(catalog, location, password, settings or Settings()))
    jobs = Jobs(catalog, handlers=handlers)
    loops = ServerLoops(Scheduler(catalog), jobs, worker=name)
    return Operations(catalog, jobs, agent_specs=agent_specs), loops


__all__ = ["MEDIA_KINDS", "SERVER_KINDS", "Operations", "ServerLoops", "server_operations"]
