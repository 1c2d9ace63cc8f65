"""The dashboard's media actions: "Copy to media" (the libraries page: the
newest point of each source or picked ids; a point's page: that point)
and "Bring back from media" (a point that lives on media only).

Wiring only: services/server_media_jobs.py checks the spec and queues a
job, as `POST /api/v1/jobs` does; the server's job runner runs it and the
Jobs page shows it. Operators only; every attempt is an audit row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from strongroom.server.dashboard.auth import Form, PageError, actor, field, read_form
from strongroom.server.guards import Guards
from strongroom.services.accounts import Role, SignedIn
from strongroom.services.server_media_jobs import MAX_POINTS, queue_media_job

Answers = Callable[[], AbstractContextManager[None]]
_SPLIT = re.compile(r"[\s,]+")


def add_media_job_pages(app: FastAPI, guards: Guards, *, answers: Answers, done: str) -> None:
    """`done`: where the browser goes once a job is queued (the Jobs page)."""
    catalog = guards.accounts.catalog
    audit = guards.audit

    def queue(request: Request, who: SignedIn, kind: str, spec: dict[str, object]) -> int:
        try:
            with answers():
                job = queue_media_job(catalog, kind, spec)
        except PageError:
            audit(request, "job.create", kind, "failed", who.user.name)
            raise
        audit(request, "job.create", f"{kind} job {job.id}", "ok", who.user.name)
        assert job.id is not None
        return job.id

    def copy(request: Request, form: Form) -> None:
        who = actor(guards, request, form, Role.OPERATOR)
        spec: dict[str, object] = {"pool": field(form, "pool")[:200]}
        picked = [p for p in _SPLIT.split(field(form, "points")[:20_000].lower()) if p]
        if field(form, "which") == "latest":
            spec["latest"] = True
        elif len(picked) > MAX_POINTS:
            raise PageError(400, f"pick at most {MAX_POINTS} points")
        else:
            spec["points"] = picked
        queue(request, who, "copy-to-media", spec)

    @app.post("/media/copy", include_in_schema=False)
    async def copy_to_media(request: Request) -> Response:
        form = await read_form(request)
        await run_in_threadpool(copy, request, form)
        return RedirectResponse(done, status_code=303)

    def bring_back(request: Request, form: Form) -> None:
        who = actor(guards, request, form, Role.OPERATOR)
        queue(request, who, "restore-from-media", {"point": field(form, "point")[:64]})

    @app.post("/media/bring-back", include_in_schema=False)
    async def bring_back_from_media(request: Request) -> Response:
        form = await read_form(request)
        await run_in_threadpool(bring_back, request, form)
        return RedirectResponse(done, status_code=303)
