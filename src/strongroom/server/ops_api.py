"""The operations API: jobs, schedules, the audit log and the events.

| endpoint | who |
| --- | --- |
| `GET /api/v1/jobs`, `GET /api/v1/jobs/{id}` | signed in |
| `POST /api/v1/jobs` (forget, prune, copy-to-media, restore-from-media; backup, restore on
  a machine) | operator |
| `DELETE /api/v1/jobs/{id}` | operator |
| `GET/POST /api/v1/schedules`, `GET/PATCH/DELETE /api/v1/schedules/{name}` | administrator |
| `GET /api/v1/audit` | administrator |
| `GET /api/v1/events` | signed in |

Lists are newest first, paged with `limit` (1-500) and `before` (an id).
Wiring only: services/operations.py does the work.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations.

from typing import Annotated, Any, Literal, NoReturn

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from strongroom.errors import UsageError
from strongroom.server.guards import Admin, Caller, Guards, Operator
from strongroom.services.operations import MAX_PAGE, Operations
from strongroom.services.scheduler import MAX_EVERY, MIN_EVERY

MAX_ID = 2**31 - 1  # the catalog's integer keys
JobKind = Literal["forget", "prune", "copy-to-media", "restore-from-media", "backup", "restore"]
Machine = Annotated[str | None, Field(default=None, min_length=1, max_length=64)]
JobStateName = Literal["queued", "running", "done", "failed", "cancelled"]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Before = Annotated[int | None, Query(ge=1, le=MAX_ID)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
ScheduleName = Annotated[str, Path(min_length=1, max_length=64)]
Every = Annotated[int | None, Field(default=None, ge=MIN_EVERY, le=MAX_EVERY)]
Calendar = Annotated[str | None, Field(default=None, min_length=1, max_length=64)]


class NewJob(BaseModel):
    kind: JobKind
    spec: dict[str, Any] = Field(default_factory=dict)
    machine: Machine = None  # backup and restore: the enrolled machine that runs it


class NewSchedule(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    kind: JobKind
    spec: dict[str, Any] = Field(default_factory=dict)
    machine: Machine = None
    every: Every = None
    calendar: Calendar = None
    enabled: bool = True


class ScheduleChange(BaseModel):
    spec: dict[str, Any] | None = None
    every: Every = None
    calendar: Calendar = None
    enabled: bool | None = None


def add_ops_routes(app: FastAPI, guards: Guards, ops: Operations) -> None:
    audit = guards.audit

    def bad(request: Request, action: str, target: str, who: str, err: UsageError) -> NoReturn:
        audit(request, action, target, "failed", who)
        raise HTTPException(400, str(err).splitlines()[0][:300])

    @app.get("/api/v1/jobs")
    def list_jobs(
        who: Caller,
        request: Request,
        limit: Limit = 100,
        before: Before = None,
        state: JobStateName | None = None,
        kind: Annotated[str | None, Query(max_length=32)] = None,
    ) -> list[dict[str, Any]]:
        audit(request, "jobs.list", "jobs", "ok", who.user.name)
        return ops.list_jobs(state=state, kind=kind, limit=limit, before=before)

    @app.get("/api/v1/jobs/{job_id}")
    def get_job(job_id: JobId, who: Caller, request: Request) -> dict[str, Any]:
        found = ops.get_job(job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id}")
        return found

    @app.post("/api/v1/jobs", status_code=201)
    def create_job(body: NewJob, who: Operator, request: Request) -> dict[str, Any]:
        try:
            job = ops.submit(body.kind, body.spec, body.machine)
        except UsageError as err:
            bad(request, "job.create", body.kind, who.user.name, err)
        audit(request, "job.create", f"{body.kind} job {job['id']}", "ok", who.user.name)
        return job

    @app.delete("/api/v1/jobs/{job_id}", status_code=204)
    def cancel_job(job_id: JobId, who: Operator, request: Request) -> Response:
        if ops.get_job(job_id) is None:
            raise HTTPException(404, f"no job {job_id}")
        if not ops.cancel_job(job_id):
            audit(request, "job.cancel", f"job {job_id}", "failed", who.user.name)
            raise HTTPException(409, f"job {job_id} is not queued")
        audit(request, "job.cancel", f"job {job_id}", "ok", who.user.name)
        return Response(status_code=204)

    @app.get("/api/v1/schedules")
    def list_schedules(who: Admin, request: Request) -> list[dict[str, Any]]:
        return ops.list_schedules()

    @app.get("/api/v1/schedules/{name}")
    def get_schedule(name: ScheduleName, who: Admin, request: Request) -> dict[str, Any]:
        found = ops.get_schedule(name)
        if found is None:
            raise HTTPException(404, "no such schedule")
        return found

    @app.post("/api/v1/schedules", status_code=201)
    def create_schedule(body: NewSchedule, who: Admin, request: Request) -> dict[str, Any]:
        try:
            made = ops.add_schedule(
                body.name,
                body.kind,
                body.spec,
                every=body.every,
                calendar=body.calendar,
                enabled=body.enabled,
                machine=body.machine,
            )
        except UsageError as err:
            bad(request, "schedule.create", body.name, who.user.name, err)
        if made is None:
            audit(request, "schedule.create", body.name, "failed", who.user.name)
            raise HTTPException(409, "a schedule of that name exists")
        audit(request, "schedule.create", body.name, "ok", who.user.name)
        return made

    @app.patch("/api/v1/schedules/{name}")
    def change_schedule(
        name: ScheduleName, body: ScheduleChange, who: Admin, request: Request
    ) -> dict[str, Any]:
        if body.every is not None and body.calendar is not None:
            raise HTTPException(400, "give 'every' or 'calendar', not both")
        try:
            changed = ops.change_schedule(name, body.model_dump(exclude_none=True))
        except UsageError as err:
            bad(request, "schedule.change", name, who.user.name, err)
        if changed is None:
            raise HTTPException(404, "no such schedule")
        audit(request, "schedule.change", name, "ok", who.user.name)
        return changed

    @app.delete("/api/v1/schedules/{name}", status_code=204)
    def remove_schedule(name: ScheduleName, who: Admin, request: Request) -> Response:
        if not ops.remove_schedule(name):
            raise HTTPException(404, "no such schedule")
        audit(request, "schedule.remove", name, "ok", who.user.name)
        return Response(status_code=204)

    @app.get("/api/v1/audit")
    def audit_log(
        who: Admin, request: Request, limit: Limit = 100, before: Before = None
    ) -> list[dict[str, Any]]:
        page = ops.audit_page(limit=limit, before=before)
        audit(request, "audit.list", "audit", "ok", who.user.name)
        return page

    @app.get("/api/v1/events")
    def events(
        who: Caller,
        request: Request,
        limit: Limit = 100,
        before: Before = None,
        kind: Annotated[str | None, Query(max_length=64)] = None,
    ) -> list[dict[str, Any]]:
        return ops.events_page(limit=limit, before=before, kind=kind)
