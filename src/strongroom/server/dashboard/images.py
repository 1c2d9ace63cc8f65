"""The dashboard's "Download the disk" of an image point (raw or a fixed
VHD) and its Seeds page (docs/server.md, "Dashboard").

Wiring only, as pages.py: services/dashboard_images.py plans and streams
the disk (the export service's loaders), services/dashboard_seeds.py lists
the seeds. A download is an operator's POST with the CSRF token (403 and
an audit row otherwise), planned before its first byte (a refusal is a
clean 4xx) and an audit row `points.disk` either way.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from strongroom.server.dashboard.auth import Form, PageError, actor, field, read_form, viewer
from strongroom.server.guards import Guards
from strongroom.services.accounts import Role
from strongroom.services.dashboard import RepositoryView
from strongroom.services.dashboard_images import DiskDownload, disk_download
from strongroom.services.dashboard_seeds import seed_rows

Render = Callable[..., HTMLResponse]
Answers = Callable[[], AbstractContextManager[None]]


def add_image_pages(
    app: FastAPI, guards: Guards, *, render: Render, answers: Answers, view: RepositoryView
) -> None:
    audit = guards.audit

    def plan(request: Request, form: Form, point_id: str) -> DiskDownload:
        who = actor(guards, request, form, Role.OPERATOR)
        fmt = field(form, "format", "raw")
        target = f"{point_id} ({fmt[:8]})"
        try:
            with answers():
                found = disk_download(view.repository(), view.point(point_id), fmt)
        except PageError:
            audit(request, "points.disk", target, "failed", who.user.name)
            raise
        audit(request, "points.disk", target, "ok", who.user.name)
        return found

    @app.post("/points/{point_id}/disk", include_in_schema=False)
    async def download_disk(request: Request, point_id: str) -> Response:
        form = await read_form(request)
        found = await run_in_threadpool(plan, request, form, point_id[:64])
        return StreamingResponse(
            found.chunks,
            media_type=found.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{found.filename}"',
                "Content-Length": str(found.length),
            },
        )

    @app.get("/seeds", response_class=HTMLResponse, include_in_schema=False)
    def seeds_page(request: Request) -> Response:
        who = viewer(guards, request)
        with answers():
            rows = seed_rows(view)
        return render("seeds.html", request, who, rows=rows)
