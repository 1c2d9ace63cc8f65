"""The dashboard's Machines and Jobs pages and the "Restore to the agent"
action of a point (docs/server.md, "Dashboard"): of a files or image point,
to the machine that made it; of a VM point, to a machine of its cluster.
A machine in a VM cluster also takes "Back up the VM now" and, from an
administrator, a schedule of that VM's backups (every N minutes, hours or
days; schedules.py's page makes the others).

Wiring only, as pages.py: services/dashboard_machines.py says what is
shown, services/agent_jobs.py checks and queues jobs (the same checks as
`POST /api/v1/jobs`). Operators queue backups and restores; administrators
also make enrollment tokens (shown once, in the answer to the POST, never
in an address or a log). Every action is an audit row.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from strongroom.model.kinds import PointKind
from strongroom.server.dashboard.auth import Form, PageError, actor, field, read_form, viewer
from strongroom.server.guards import Guards
from strongroom.services.accounts import Role, SignedIn
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.agents import Agents
from strongroom.services.dashboard import RepositoryView
from strongroom.services.dashboard_machines import (
    cluster_machines,
    enrolled,
    job_rows,
    machine_rows,
)
from strongroom.services.dashboard_schedules import read_when
from strongroom.services.operations import Operations

Render = Callable[..., HTMLResponse]
Answers = Callable[[], AbstractContextManager[None]]


def add_machine_pages(
    app: FastAPI,
    guards: Guards,
    *,
    render: Render,
    answers: Answers,
    view: RepositoryView,
    agent_jobs: AgentJobs,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    catalog = guards.accounts.catalog
    audit = guards.audit

    def machines(request: Request, who: SignedIn, status: int = 200, **extra: Any) -> Response:
        with answers():
            rows = machine_rows(catalog, view)
        return render("machines.html", request, who, status, rows=rows, now=clock(), **extra)

    @app.get("/machines", response_class=HTMLResponse, include_in_schema=False)
    def machines_page(request: Request) -> Response:
        return machines(request, viewer(guards, request))

    def queue(request: Request, who: SignedIn, kind: str, machine: str, spec: Any) -> int:
        try:
            with answers():
                job = agent_jobs.submit(kind, machine, spec)
        except PageError:
            audit(request, "job.create", f"{kind} on {machine}", "failed", who.user.name)
            raise
        audit(request, "job.create", f"{kind} job {job.id} on {machine}", "ok", who.user.name)
        assert job.id is not None
        return job.id

    def back_up(request: Request, form: Form, name: str) -> None:
        who = actor(guards, request, form, Role.OPERATOR)
        row = next((r for r in machine_rows(catalog, view) if r.machine.name == name), None)
        if row is None:
            raise PageError(404, "no such machine")
        vm = field(form, "vm").strip()
        if vm:  # a VM of its cluster: the agent's [vm.NAME] table says where it is
            queue(request, who, "backup", name, {"kind": "vm", "vm": vm[:64]})
            return
        if not row.backup_paths:
            raise PageError(409, "no schedule or point of this machine names what to back up")
        queue(request, who, "backup", name, {"paths": row.backup_paths})

    @app.post("/machines/{name}/backup", include_in_schema=False)
    async def backup_now(request: Request, name: str) -> Response:
        form = await read_form(request)
        await run_in_threadpool(back_up, request, form, name[:64])
        return RedirectResponse("/jobs", status_code=303)

    operations = Operations(catalog, agent_jobs.jobs, clock, agent_specs=agent_jobs.check_spec)

    def schedule_vm(request: Request, form: Form, name: str) -> None:
        """An administrator's schedule of a VM's backups on this machine,
        every N minutes, hours or days (the Schedules page's interval), as
        `POST /api/v1/schedules` makes it (the same checks)."""
        who = actor(guards, request, form, Role.ADMINISTRATOR)
        title = field(form, "schedule").strip()[:64]
        spec = {"kind": "vm", "vm": field(form, "vm").strip()[:64]}
        try:
            with answers():
                every, _ = read_when({**form, "when": ["every"]})
                made = operations.add_schedule(title, "backup", spec, every=every, machine=name)
        except PageError:
            audit(request, "schedule.create", title or "(no name)", "failed", who.user.name)
            raise
        if made is None:
            audit(request, "schedule.create", title, "failed", who.user.name)
            raise PageError(409, "a schedule of that name exists")
        audit(request, "schedule.create", title, "ok", who.user.name)

    @app.post("/machines/{name}/schedules", include_in_schema=False)
    async def add_vm_schedule(request: Request, name: str) -> Response:
        form = await read_form(request)
        await run_in_threadpool(schedule_vm, request, form, name[:64])
        return RedirectResponse("/machines", status_code=303)

    def new_token(request: Request, form: Form) -> Response:
        who = actor(guards, request, form, Role.ADMINISTRATOR)
        machine = field(form, "machine")[:64]
        try:
            with answers():
                token, expires = Agents(catalog).create_enrollment(machine, timedelta(days=1))
        except PageError:
            audit(request, "enrollment.create", "(invalid name)", "failed", who.user.name)
            raise
        audit(request, "enrollment.create", machine, "ok", who.user.name)
        made = {"machine": machine, "token": token, "expires": expires}
        return machines(request, who, enrollment=made)

    @app.post("/machines/enrollments", include_in_schema=False)
    async def create_enrollment(request: Request) -> Response:
        form = await read_form(request)
        answer: Response = await run_in_threadpool(new_token, request, form)
        answer.headers["Cache-Control"] = "no-store"  # the token: shown once
        return answer

    # --- jobs ------------------------------------------------------------------

    @app.get("/jobs", response_class=HTMLResponse, include_in_schema=False)
    def jobs_page(
        request: Request, before: str = "", state: str = "", machine: str = ""
    ) -> Response:
        who = viewer(guards, request)
        with answers():
            page = job_rows(catalog, before=before, state=state, machine=machine)
        return render("jobs.html", request, who, page=page, rows=page.rows)

    @app.get("/jobs/rows", response_class=HTMLResponse, include_in_schema=False)
    def jobs_rows(
        request: Request, before: str = "", state: str = "", machine: str = ""
    ) -> Response:
        who = viewer(guards, request)
        with answers():
            page = job_rows(catalog, before=before, state=state, machine=machine)
        return render("_jobs.html", request, who, page=page, rows=page.rows)

    # --- restore to the agent ---------------------------------------------------

    def restore(request: Request, form: Form, point_id: str) -> None:
        who = actor(guards, request, form, Role.OPERATOR)
        with answers():
            point = view.point(point_id)
        machine = point.host
        if point.kind == PointKind.VM:  # its host is the cluster: one of its machines runs it
            machine = field(form, "machine")[:64]
            if machine not in cluster_machines(catalog, point.host):
                audit(request, "job.create", f"restore on {machine}", "failed", who.user.name)
                raise PageError(409, "pick an enrolled machine of the point's VM cluster")
        elif not enrolled(catalog, point.host):
            raise PageError(409, "the point's host is not an enrolled machine")
        picks = form.get("path", [])
        spec: dict[str, Any] = {
            "point": point.id,
            "paths": picks,
            "target": field(form, "target").strip(),
            "overwrite": field(form, "overwrite", "refuse"),
        }
        # raw or qcow2; a files point's form has a download's format (tar, zip) instead
        if point.kind != PointKind.FILES and field(form, "format"):
            spec["format"] = field(form, "format")
        queue(request, who, "restore", machine, spec)

    @app.post("/points/{point_id}/restore", include_in_schema=False)
    async def restore_to_agent(request: Request, point_id: str) -> Response:
        form = await read_form(request)
        await run_in_threadpool(restore, request, form, point_id[:64])
        return RedirectResponse("/jobs", status_code=303)
