"""The web dashboard: server-rendered pages (Jinja2) with htmx for the
parts that change in place (a point's folders, a library's inventory).

Wiring only: every page asks services/dashboard.py (the repository's points,
sources, folders, archives) or services/dashboard_admin.py (users, audit,
events, libraries, inventory) and renders; images.py adds an image point's
disk download and the Seeds page, machines.py the Machines and Jobs pages,
schedules.py the Schedules page, media_jobs.py "Copy to media" and "Bring
back from media".
Who may do what is auth.py's; every action (sign-in, sign-out, download,
inventory, user changes, refusals) is a row of the audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from strongroom.config import Settings
from strongroom.errors import (
    CatalogError,
    MediaError,
    MediaNotFound,
    PathNotFound,
    PointNotFound,
    StrongroomError,
    UsageError,
)
from strongroom.model.kinds import PointKind
from strongroom.server.dashboard.auth import (
    SIGNIN_COOKIE,
    Form,
    NeedSignIn,
    PageError,
    actor,
    at_least,
    field,
    read_form,
    require_role,
    signin_token_ok,
    viewer,
)
from strongroom.server.dashboard.chart import timeline_svg
from strongroom.server.dashboard.headers import SecurityHeaders
from strongroom.server.dashboard.images import add_image_pages
from strongroom.server.dashboard.machines import add_machine_pages
from strongroom.server.dashboard.media_jobs import add_media_job_pages
from strongroom.server.dashboard.schedules import add_schedule_pages
from strongroom.server.guards import COOKIE, Guards
from strongroom.services import dashboard_admin as admin
from strongroom.services.accounts import Role, SignedIn
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.dashboard import RepositoryView, point_bytes
from strongroom.services.dashboard_admin import Conflict
from strongroom.services.dashboard_machines import cluster_machines, enrolled
from strongroom.services.dashboard_schedules import when_text
from strongroom.services.jobs import Jobs
from strongroom.services.operations import Operations
from strongroom.services.server_media_jobs import points_on_media_only

STATIC = Path(__file__).parent / "static"
POINTS_PAGE = 100


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("strongroom.server.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = _size
    env.filters["age"] = _age
    env.filters["when"] = _when
    env.filters["q"] = lambda text: quote(str(text), safe="/")
    env.globals["point_bytes"] = point_bytes
    env.globals["when_text"] = when_text
    return env


@contextmanager
def _answers() -> Iterator[None]:
    """The services' errors as the page's status: not found 404, a bad request
    400, a rule 409, a busy or failing library 409, anything else 503."""
    try:
        yield
    except (PointNotFound, PathNotFound, MediaNotFound) as err:
        raise PageError(404, _line(err)) from None
    except Conflict as err:
        raise PageError(409, _line(err)) from None
    except UsageError as err:
        raise PageError(400, _line(err)) from None
    except CatalogError as err:
        status = 404 if str(err).startswith("catalog: no ") else 503
        raise PageError(status, _line(err)) from None
    except MediaError as err:
        raise PageError(409, _line(err)) from None
    except StrongroomError as err:
        raise PageError(503, _line(err)) from None


def _line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:300]


def add_dashboard_routes(
    app: FastAPI,
    guards: Guards,
    *,
    view: RepositoryView,
    settings: Settings,
    secure_cookies: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    agent_jobs: AgentJobs | None = None,
) -> None:
    """The dashboard's pages under `/` over `view` (the repository) and the
    catalog of `guards.accounts`; `settings` names the libraries; with
    `agent_jobs`, the Machines and Jobs pages and restores to agents."""
    env = environment()
    accounts = guards.accounts
    audit = guards.audit
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def render(
        name: str, request: Request, who: SignedIn | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        context = {
            "who": who,
            "csrf": who.csrf if who is not None else "",
            "can_operate": who is not None and at_least(who.user.role, Role.OPERATOR),
            "is_admin": who is not None and at_least(who.user.role, Role.ADMINISTRATOR),
            "path": request.url.path,
            **values,
        }
        return HTMLResponse(env.get_template(name).render(context), status_code=status)

    @app.exception_handler(NeedSignIn)
    async def need_sign_in(request: Request, _exc: NeedSignIn) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": "/signin"})
        return RedirectResponse("/signin", status_code=303)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        if request.headers.get("HX-Request"):  # swapped in place of the part asked for
            return render("_error.html", request, None, exc.status, message=exc.message)
        return render("error.html", request, None, exc.status, message=exc.message)

    # --- signing in and out ----------------------------------------------------

    def signin_page(request: Request, status: int = 200, error: str = "") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        page = render("signin.html", request, None, status, signin_token=token, error=error)
        page.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies, path="/signin")  # fmt: skip
        return page

    @app.get("/signin", response_class=HTMLResponse, include_in_schema=False)
    def signin_form(request: Request) -> Response:
        return signin_page(request)

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request) -> Response:
        form = await read_form(request)
        if not signin_token_ok(request, form):
            audit(request, "csrf", "/signin", "denied", None)
            return signin_page(request, 403, "the sign-in form expired: try again")
        name, password = field(form, "name")[:64], field(form, "password")
        signed = await run_in_threadpool(accounts.sign_in, name, password)
        if signed is None:
            await run_in_threadpool(audit, request, "session.create", name, "failed", None)
            return signin_page(request, 401, "wrong name or password")
        await run_in_threadpool(audit, request, "session.create", name, "ok", signed.user.name)
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(COOKIE, signed.token, httponly=True, samesite="strict",
                          secure=secure_cookies, path="/", expires=signed.expires)  # fmt: skip
        answer.delete_cookie(SIGNIN_COOKIE, path="/signin")
        return answer

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request) -> Response:
        form = await read_form(request)
        who = await run_in_threadpool(actor, guards, request, form, Role.READ_ONLY)
        await run_in_threadpool(accounts.sign_out, who.token)
        await run_in_threadpool(audit, request, "session.delete", who.user.name, "ok",
                                who.user.name)  # fmt: skip
        answer = RedirectResponse("/signin", status_code=303)
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    # --- the repository's points -------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request) -> Response:
        who = viewer(guards, request)
        with _answers():
            sources = view.sources()
        now = clock()
        charts = {s.key: timeline_svg(s.points, now) for s in sources}
        return render("overview.html", request, who, sources=sources, now=now, charts=charts)

    @app.get("/points", response_class=HTMLResponse, include_in_schema=False)
    def points_list(
        request: Request,
        host: str = "",
        kind: str = "",
        tag: str = "",
        source: str = "",
        page: str = "1",
    ) -> Response:
        who = viewer(guards, request)
        with _answers():
            points = view.points()
            keys = {p.id: s.key for s in view.sources() for p in s.points} if source else {}
        chosen = [
            p
            for p in reversed(points)
            if (not host or p.host == host)
            and (not kind or str(p.kind) == kind)
            and (not tag or tag in p.tags)
            and (not source or keys.get(p.id) == source)
        ]
        number = admin.page_number(page)
        start = (number - 1) * POINTS_PAGE
        shown = chosen[start : start + POINTS_PAGE]
        return render(
            "points.html",
            request,
            who,
            points=shown,
            total=len(chosen),
            page=number,
            more=len(chosen) > start + POINTS_PAGE,
            filters={"host": host, "kind": kind, "tag": tag, "source": source},
            hosts=sorted({p.host for p in points}),
            kinds=sorted({str(p.kind) for p in points}),
        )

    def folder_values(point_id: str, path: str) -> dict[str, Any]:
        with _answers():
            point = view.point(point_id)
            folder = view.folder(point_id, path)
        return {"point": point, "folder": folder}

    @app.get("/points/{point_id}", response_class=HTMLResponse, include_in_schema=False)
    def point_page(request: Request, point_id: str, path: str = "/") -> Response:
        who = viewer(guards, request)
        with _answers():
            point = view.point(point_id)
        values: dict[str, Any] = {"point": point, "folder": None, "browse_error": ""}
        try:
            values.update(folder_values(point_id, path))
        except PageError as err:
            if err.status != 400 or path != "/":
                raise
            values["browse_error"] = err.message  # an image or VM point: no folders here
        values["restorable"] = agent_jobs is not None and enrolled(accounts.catalog, point.host)
        values["vm_machines"] = (
            cluster_machines(accounts.catalog, point.host)
            if agent_jobs is not None and point.kind == PointKind.VM
            else []
        )
        with _answers():
            values["pools"] = [p.name for p in accounts.catalog.list_pools()]
        return render("point.html", request, who, **values)

    @app.get("/points/{point_id}/folder", response_class=HTMLResponse, include_in_schema=False)
    def point_folder(request: Request, point_id: str, path: str = "/") -> Response:
        who = viewer(guards, request)
        return render("_folder.html", request, who, **folder_values(point_id, path))

    @app.post("/points/{point_id}/download", include_in_schema=False)
    async def download(request: Request, point_id: str) -> Response:
        form = await read_form(request)
        who = await run_in_threadpool(actor, guards, request, form, Role.OPERATOR)
        fmt = field(form, "format", "tar")
        paths = form.get("path", [])
        target = f"{point_id[:64]} ({len(paths)} picked, {fmt[:8]})"

        def plan() -> Iterator[bytes]:
            try:
                with _answers():
                    return view.archive(point_id, paths, fmt)
            except PageError:
                audit(request, "points.download", target, "failed", who.user.name)
                raise

        stream = await run_in_threadpool(plan)
        await run_in_threadpool(audit, request, "points.download", target, "ok", who.user.name)
        name = f"strongroom-{point_id[:8]}.{fmt}"
        media = "application/x-tar" if fmt == "tar" else "application/zip"
        return StreamingResponse(
            stream,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # --- users, audit, events -----------------------------------------------------

    @app.get("/users", response_class=HTMLResponse, include_in_schema=False)
    def users_page(request: Request, notice: str = "") -> Response:
        who = viewer(guards, request)
        require_role(guards, request, who, Role.ADMINISTRATOR)
        users = accounts.catalog.list_users()
        roles = [str(r) for r in Role]
        return render("users.html", request, who, users=users, roles=roles, notice=notice[:200])

    def user_change(request: Request, form: Form, name: str | None) -> str:
        who = actor(guards, request, form, Role.ADMINISTRATOR)
        action = "user.create" if name is None else "user.change"
        target = (name if name is not None else field(form, "name"))[:64]
        try:
            with _answers():
                role_text = field(form, "role")
                role = Role(role_text) if role_text in {str(r) for r in Role} else None
                if name is None:
                    if role is None:
                        raise UsageError("choose a role")
                    if accounts.catalog.find_user(target) is not None:
                        raise Conflict(f"user {target} already exists")
                    accounts.create_user(target, field(form, "password"), role)
                    done = f"user {target} created"
                else:
                    what = field(form, "action")
                    if what == "role" and role is not None:
                        admin.change_user(accounts, name, role=role)
                    elif what in ("disable", "enable"):
                        admin.change_user(accounts, name, disabled=what == "disable")
                    else:
                        raise UsageError("nothing to change")
                    done = f"user {target} changed"
        except PageError:
            audit(request, action, target, "failed", who.user.name)
            raise
        audit(request, action, target, "ok", who.user.name)
        return done

    @app.post("/users", include_in_schema=False)
    async def create_user(request: Request) -> Response:
        form = await read_form(request)
        done = await run_in_threadpool(user_change, request, form, None)
        return RedirectResponse(f"/users?notice={quote(done)}", status_code=303)

    @app.post("/users/{name}", include_in_schema=False)
    async def change_user(request: Request, name: str) -> Response:
        form = await read_form(request)
        done = await run_in_threadpool(user_change, request, form, name[:64])
        return RedirectResponse(f"/users?notice={quote(done)}", status_code=303)

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request, page: str = "1") -> Response:
        who = viewer(guards, request)
        require_role(guards, request, who, Role.ADMINISTRATOR)
        with _answers():
            rows = admin.audit_page(accounts, admin.page_number(page))
        return render("audit.html", request, who, page=rows)

    @app.get("/events", response_class=HTMLResponse, include_in_schema=False)
    def events_page(request: Request, page: str = "1") -> Response:
        who = viewer(guards, request)
        with _answers():
            rows = admin.events_page(accounts, admin.page_number(page))
        return render("events.html", request, who, page=rows)

    # --- media libraries --------------------------------------------------------------

    @app.get("/libraries", response_class=HTMLResponse, include_in_schema=False)
    def libraries_page(request: Request) -> Response:
        who = viewer(guards, request)
        with _answers():
            found = admin.libraries(accounts)
            pools = [p.name for p in accounts.catalog.list_pools()]
            only = points_on_media_only(accounts.catalog, {p.id for p in view.points()})
        return render("libraries.html", request, who, libraries=found, report=None,
                      pools=pools, media_only=only)  # fmt: skip

    def run_inventory(request: Request, form: Form, name: str) -> dict[str, Any]:
        who = actor(guards, request, form, Role.OPERATOR)
        try:
            with _answers():
                report = admin.fast_inventory(accounts, settings, name)
                shown = admin.library_view(accounts, name)
        except PageError:
            audit(request, "library.inventory", name, "failed", who.user.name)
            raise
        audit(request, "library.inventory", name, "ok", who.user.name)
        return {"who": who, "lib": shown, "report": report.as_dict()}

    @app.post("/libraries/{name}/inventory", include_in_schema=False)
    async def inventory(request: Request, name: str) -> Response:
        form = await read_form(request)
        done = await run_in_threadpool(run_inventory, request, form, name[:128])
        if request.headers.get("HX-Request"):
            who = done.pop("who")
            return render("_library.html", request, who, **done)
        return RedirectResponse("/libraries", status_code=303)

    add_image_pages(app, guards, render=render, answers=_answers, view=view)
    done = "/jobs" if agent_jobs is not None else "/libraries"  # the Jobs page needs agent_jobs
    add_media_job_pages(app, guards, answers=_answers, done=done)
    if agent_jobs is not None:
        add_machine_pages(app, guards, render=render, answers=_answers, view=view,
                          agent_jobs=agent_jobs, clock=clock)  # fmt: skip
        operations = Operations(accounts.catalog, agent_jobs.jobs, clock,
                                agent_specs=agent_jobs.check_spec)  # fmt: skip
    else:
        operations = Operations(accounts.catalog, Jobs(accounts.catalog), clock)
    add_schedule_pages(app, guards, render=render, answers=_answers, operations=operations,
                       on_agents=agent_jobs is not None)  # fmt: skip
