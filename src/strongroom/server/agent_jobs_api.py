"""Agents' jobs over HTTP: an enrolled machine's agent claims the jobs of
ITS machine, reports progress (its heartbeat) and finishes them
(docs/server.md, "Schedules and jobs on agents").

- `POST /api/v1/agent/jobs/claim {"wait": 0-20}`: the next due job of this
  machine (200), or 204 after waiting up to `wait` seconds;
- `POST /api/v1/agent/jobs/{id}/progress {"progress": {...}}`: heartbeat;
  `{"running": false}` once the job is no longer this agent's;
- `POST /api/v1/agent/jobs/{id}/finish {"ok", "outcome", "point"?}`: done or
  failed (a failure raises the alert `job.failed`); a `point` that is not
  one of this machine's is refused (400) and the job stays the agent's;
- `POST /api/v1/agent/retention {"source", "path", "keep_last", ...}`: the
  retention of one of its protected sources, kept by the server as a
  `forget` schedule of this machine's points (services/agent_retention.py;
  an agent never deletes: the server's forget job does).

Contract: the agent's bearer credentials exactly as server/agent_api.py
checks them (its dependency, reused); a job of another machine answers the
same 404 as a job that does not exist. Wiring only: services/agent_jobs.py
does the work.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations.

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from strongroom.errors import UsageError
from strongroom.server.agent_api import agent_dependency
from strongroom.server.guards import Guards
from strongroom.services.agent_jobs import (
    MAX_OUTCOME,
    MAX_PROGRESS_KEYS,
    MAX_WAIT,
    POLL,
    AgentJobs,
    agent_job_doc,
)
from strongroom.services.agent_retention import register_retention
from strongroom.services.agents import Agents, Machine
from strongroom.services.operations import schedule_doc

MAX_ID = 2**31 - 1
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
_NO_JOB = "no such job of this machine"


class ClaimRequest(BaseModel):
    wait: float = Field(default=0.0, ge=0.0, le=MAX_WAIT)


class ProgressRequest(BaseModel):
    progress: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PROGRESS_KEYS)


class FinishRequest(BaseModel):
    ok: bool
    outcome: str = Field(default="", max_length=MAX_OUTCOME)
    point: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class RetentionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # keep rules of a policy only

    source: str = Field(min_length=1, max_length=128)
    path: str = Field(min_length=1, max_length=4096)
    every: int = Field(default=3600, ge=0, le=2**31 - 1)
    keep_last: int = Field(default=0, ge=0, le=2**31 - 1)
    keep_within: int = Field(default=0, ge=0, le=2**31 - 1)
    hourly: int = Field(default=0, ge=0, le=2**31 - 1)
    daily: int = Field(default=0, ge=0, le=2**31 - 1)
    weekly: int = Field(default=0, ge=0, le=2**31 - 1)


def agent_jobs_routes(agents: Agents, jobs: AgentJobs) -> Callable[[FastAPI, Guards], None]:
    """The `add_routes` for `create_app(routers=[...])`, bound to these services."""

    def add(app: FastAPI, guards: Guards) -> None:
        _add_routes(app, guards, agents, jobs)

    return add


def _add_routes(app: FastAPI, guards: Guards, agents: Agents, jobs: AgentJobs) -> None:
    audit = guards.audit
    Agent = Annotated[Machine, Depends(agent_dependency(agents))]

    @app.post("/api/v1/agent/jobs/claim", responses={204: {"description": "no job is due"}})
    async def claim(who: Agent, body: ClaimRequest | None = None) -> Any:
        wait = body.wait if body is not None else 0.0
        deadline = time.monotonic() + wait
        while True:
            job = await run_in_threadpool(jobs.claim, who.name)
            if job is not None:
                return agent_job_doc(job)
            if time.monotonic() + POLL > deadline:
                return Response(status_code=204)
            await asyncio.sleep(POLL)  # no thread held while waiting

    @app.post("/api/v1/agent/jobs/{job_id}/progress")
    def progress(job_id: JobId, body: ProgressRequest, who: Agent) -> dict[str, bool]:
        try:
            running = jobs.progress(who.name, job_id, body.progress)
        except UsageError as err:
            raise HTTPException(400, str(err)) from None
        if running is None:
            raise HTTPException(404, _NO_JOB)
        return {"running": running}

    @app.post("/api/v1/agent/jobs/{job_id}/finish")
    def finish(job_id: JobId, body: FinishRequest, who: Agent, request: Request) -> dict[str, Any]:
        try:
            job = jobs.finish(who.name, job_id, body.ok, body.outcome, body.point)
        except UsageError as err:
            audit(request, "agent.job", f"{who.name} job {job_id}", "denied", None)
            raise HTTPException(400, str(err)) from None
        if job is None:
            raise HTTPException(404, _NO_JOB)
        outcome = "ok" if body.ok else "failed"
        audit(request, "agent.job", f"{who.name} job {job_id} ({job.kind})", outcome, None)
        return {"id": job.id, "state": str(job.state)}

    @app.post("/api/v1/agent/retention")
    def retention(body: RetentionRequest, who: Agent, request: Request) -> dict[str, Any]:
        try:
            schedule = register_retention(jobs.catalog, who.name, body.model_dump())
        except UsageError as err:
            audit(request, "agent.retention", who.name, "denied", None)
            raise HTTPException(400, str(err)) from None
        audit(request, "agent.retention", f"{who.name} schedule {schedule.name}", "ok", None)
        return schedule_doc(schedule)
