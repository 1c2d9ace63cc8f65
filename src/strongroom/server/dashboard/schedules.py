"""The dashboard's Schedules page (docs/server.md, "Dashboard"): the
catalog's schedules with their next run, and an administrator's form to
make one (a files, image or VM backup on a machine's agent, a forget by
policy, a prune or a copy of the newest points to a media pool on the
server; every N minutes, hours or days, or daily
or weekly at a time, UTC), pause, resume or delete one.

Wiring only, as pages.py: services/dashboard_schedules.py reads the form,
services/operations.py checks and stores the schedule exactly as `POST,
PATCH, DELETE /api/v1/schedules` do (administrators: the API's rule).
Changing the kind swaps the form's fields in place (htmx, `GET
/schedules/fields?what=KIND`); without script the files fields are shown.
Every action is an audit row with the API's names (`schedule.create`,
`schedule.change`, `schedule.remove`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from strongroom.errors import UsageError
from strongroom.server.dashboard.auth import (
    Form,
    PageError,
    actor,
    read_form,
    require_role,
    viewer,
)
from strongroom.server.guards import Guards
from strongroom.services.accounts import Role
from strongroom.services.dashboard_schedules import (
    DAYS,
    GROUPS,
    IMAGE_TRACKERS,
    KEEPS,
    VM_TRACKERS,
    WHATS,
    read_schedule,
    schedule_rows,
)
from strongroom.services.operations import Operations, check_schedule_name

Render = Callable[..., HTMLResponse]
Answers = Callable[[], AbstractContextManager[None]]
_ACTIONS = {"pause": "schedule.change", "resume": "schedule.change", "delete": "schedule.remove"}


def add_schedule_pages(
    app: FastAPI,
    guards: Guards,
    *,
    render: Render,
    answers: Answers,
    operations: Operations,
    on_agents: bool,
) -> None:
    """`on_agents`: the server runs agents' jobs (the backups are offered)."""
    catalog = guards.accounts.catalog
    audit = guards.audit
    whats = [w for w in WHATS if on_agents or not w[3]]
    choices = {"days": DAYS, "groups": GROUPS, "keeps": KEEPS,
               "image_trackers": IMAGE_TRACKERS, "vm_trackers": VM_TRACKERS}  # fmt: skip

    def machines() -> list[str]:
        return [m.name for m in catalog.list_machines() if not m.disabled] if on_agents else []

    def pools() -> list[str]:
        return [p.name for p in catalog.list_pools()]

    @app.get("/schedules", response_class=HTMLResponse, include_in_schema=False)
    def schedules_page(request: Request, notice: str = "") -> Response:
        who = viewer(guards, request)
        with answers():
            rows = schedule_rows(catalog.list_schedules())
            names, media = machines(), pools()
        what = whats[0][0]
        return render("schedules.html", request, who, rows=rows, whats=whats, what=what,
                      machines=names, pools=media, notice=notice[:200], **choices)  # fmt: skip

    @app.get("/schedules/fields", response_class=HTMLResponse, include_in_schema=False)
    def schedule_fields(request: Request, what: str = "files") -> Response:
        who = viewer(guards, request)
        require_role(guards, request, who, Role.ADMINISTRATOR)
        if what not in {w[0] for w in whats}:
            raise PageError(400, "choose what to schedule")
        with answers():
            names, media = machines(), pools()
        return render("_schedule_fields.html", request, who, what=what, machines=names,
                      pools=media, **choices)  # fmt: skip

    def create(request: Request, form: Form) -> str:
        who = actor(guards, request, form, Role.ADMINISTRATOR)
        title = _target((form.get("name") or [""])[0].strip())
        try:
            with answers():
                asked = read_schedule(form)
                if asked.machine is not None and not on_agents:
                    raise UsageError("this server runs no agent jobs")
                made = operations.add_schedule(asked.name, asked.kind, asked.spec,
                                               every=asked.every, calendar=asked.calendar,
                                               machine=asked.machine)  # fmt: skip
            if made is None:
                raise PageError(409, "a schedule of that name exists")
        except PageError:
            audit(request, "schedule.create", title, "failed", who.user.name)
            raise
        audit(request, "schedule.create", title, "ok", who.user.name)
        return f"schedule {title} made"

    @app.post("/schedules", include_in_schema=False)
    async def create_schedule(request: Request) -> Response:
        form = await read_form(request)
        done = await run_in_threadpool(create, request, form)
        return RedirectResponse(f"/schedules?notice={quote(done)}", status_code=303)

    def change(request: Request, form: Form, name: str, action: str) -> str:
        who = actor(guards, request, form, Role.ADMINISTRATOR)
        with answers():
            if action == "delete":
                found = operations.remove_schedule(name)
            else:
                changed = operations.change_schedule(name, {"enabled": action == "resume"})
                found = changed is not None
        if not found:
            audit(request, _ACTIONS[action], _target(name), "failed", who.user.name)
            raise PageError(404, "no such schedule")
        audit(request, _ACTIONS[action], f"{name} ({action})", "ok", who.user.name)
        return f"schedule {name} {'deleted' if action == 'delete' else action + 'd'}"

    @app.post("/schedules/{name}/{action}", include_in_schema=False)
    async def change_schedule(request: Request, name: str, action: str) -> Response:
        if action not in _ACTIONS:
            raise PageError(404, "no such action")
        form = await read_form(request)
        # never cut: a longer name is no schedule's (not the one of its first 64)
        done = await run_in_threadpool(change, request, form, name, action)
        return RedirectResponse(f"/schedules?notice={quote(done)}", status_code=303)


def _target(name: str) -> str:
    """A schedule's name as an audit row's target: as typed when it is a
    schedule name, else a placeholder (a NUL is no database's text)."""
    try:
        return check_schedule_name(name)
    except UsageError:
        return "(invalid name)"


__all__ = ["add_schedule_pages"]
