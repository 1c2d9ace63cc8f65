"""The agents' part of the HTTP API: enrollment and machines for
administrators, and `/api/v1/agent/*` for enrolled machines (docs/server.md,
"Agents").

Contract:
- `/api/v1/agent/*` takes only `Authorization: Bearer <agent_id>.<secret>`
  (a session cookie is ignored there: 401), and the user endpoints take
  only a session (an agent's bearer is ignored there: 401). `enroll` is the
  one agent endpoint without credentials: its one-time token is them;
- append-only: an agent can ask which chunks are missing, upload verified
  chunks, commit a point of its own machine (a VM point: of its cluster),
  list its own points and its cluster's VM points, list the repository's
  seeds and read one seed's document (seeds are shared repository content,
  not another machine's points: no point is ever answered there), read
  chunks by id, and take, renew, verify and hand back a VM's lease of its
  cluster. No agent
  endpoint deletes, forgets, prunes or rewrites anything (other methods
  answer 405);
- a bad, used or expired enrollment token, and bad agent credentials, get
  one 401 line each that says nothing of which; no token or secret is ever
  logged, audited or echoed.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints'
# annotations at definition time.

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from strongroom.errors import ChunkNotFound, IntegrityError, StrongroomError, UsageError
from strongroom.model.names import printable
from strongroom.server.guards import Admin, Guards
from strongroom.services.agent_intake import BUNDLE_TYPE, MAX_IDS, MAX_READ, Intake, chunk_type
from strongroom.services.agent_seeds import seed_doc, seed_docs
from strongroom.services.agent_vm_leases import (
    MAX_TTL,
    MIN_TTL,
    LeaseBusy,
    LeaseLost,
    NotInCluster,
    VmLeases,
)
from strongroom.services.agents import DEFAULT_ENROLLMENT, MAX_ENROLLMENT, Agents, Machine

__all__ = ["BUNDLE_TYPE", "agent_dependency", "agent_routes"]

ChunkHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_BAD_CREDENTIALS = "missing or wrong agent credentials"

UPLOAD_SLOTS = 16  # bundles received and stored at once (memory: about 2 x 32 MiB each)


class NewEnrollment(BaseModel):
    machine: str = Field(min_length=1, max_length=64)
    expires_in: int = Field(
        default=int(DEFAULT_ENROLLMENT.total_seconds()),
        ge=1,
        le=int(MAX_ENROLLMENT.total_seconds()),
    )


class MachineChange(BaseModel):
    disabled: bool


class ClusterChange(BaseModel):
    cluster: str | None = Field(default=None, min_length=1, max_length=64)


class LeaseTake(BaseModel):
    ttl: float = Field(default=60.0, ge=MIN_TTL, le=MAX_TTL)


class LeaseHeld(BaseModel):
    holder: str = Field(pattern=r"^[0-9a-f]{16}$")


class LeaseRenew(LeaseHeld):
    ttl: float = Field(default=60.0, ge=MIN_TTL, le=MAX_TTL)
    notes: dict[str, Any] | None = None


class EnrollRequest(BaseModel):
    token: str = Field(min_length=1, max_length=128)


class MissingRequest(BaseModel):
    ids: list[ChunkHex] = Field(max_length=MAX_IDS)


class ChunkRef(BaseModel):
    id: ChunkHex
    type: int = Field(ge=0, le=1)


class ReadRequest(BaseModel):
    chunks: list[ChunkRef] = Field(min_length=1, max_length=MAX_READ)


class CommitRequest(BaseModel):
    point: dict[str, Any]
    commit_id: str = Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9]+$")


def _machine_doc(m: Machine) -> dict[str, Any]:
    return {
        "name": m.name,
        "created": m.created.isoformat(),
        "last_seen": m.last_seen.isoformat() if m.last_seen else None,
        "disabled": m.disabled,
        "cluster": m.cluster,
    }


def agent_routes(agents: Agents, intake: Intake) -> Callable[[FastAPI, Guards], None]:
    """The `add_routes` for `create_app(routers=[...])`, bound to these services."""

    def add(app: FastAPI, guards: Guards) -> None:
        _add_admin_routes(app, guards, agents)
        _add_agent_routes(app, guards, agents, intake)
        _add_vm_lease_routes(app, guards, agents, VmLeases(intake.repo))

    return add


def _add_admin_routes(app: FastAPI, guards: Guards, agents: Agents) -> None:
    audit = guards.audit

    @app.post("/api/v1/enrollments", status_code=201)
    def create_enrollment(body: NewEnrollment, who: Admin, request: Request) -> dict[str, Any]:
        try:
            token, expires = agents.create_enrollment(
                body.machine, timedelta(seconds=body.expires_in)
            )
        except UsageError as err:
            # not the name: it may hold what a database refuses (NUL)
            audit(request, "enrollment.create", "(invalid name)", "failed", who.user.name)
            raise HTTPException(400, str(err)) from None
        audit(request, "enrollment.create", body.machine, "ok", who.user.name)
        return {"token": token, "machine": body.machine, "expires": expires.isoformat()}

    @app.get("/api/v1/machines")
    def list_machines(who: Admin, request: Request) -> list[dict[str, Any]]:
        audit(request, "machines.list", "machines", "ok", who.user.name)
        return [_machine_doc(m) for m in agents.list_machines()]

    @app.patch("/api/v1/machines/{name}")
    def change_machine(
        name: str, body: MachineChange, who: Admin, request: Request
    ) -> dict[str, Any]:
        known = len(name) <= 64 and name.isprintable()
        changed = agents.set_disabled(name, body.disabled) if known else None
        if changed is None:
            raise HTTPException(404, "no such machine")
        audit(request, "machine.change", name, "ok", who.user.name)
        return _machine_doc(changed)

    @app.put("/api/v1/machines/{name}/cluster")
    def set_cluster(name: str, body: ClusterChange, who: Admin, request: Request) -> dict[str, Any]:
        known = len(name) <= 64 and name.isprintable()
        try:
            changed = agents.set_cluster(name, body.cluster) if known else None
        except UsageError as err:
            audit(request, "machine.cluster", name, "failed", who.user.name)
            raise HTTPException(400, str(err)) from None
        if changed is None:
            raise HTTPException(404, "no such machine")
        audit(request, "machine.cluster", f"{name} {body.cluster or '-'}", "ok", who.user.name)
        return _machine_doc(changed)


def agent_dependency(agents: Agents) -> Callable[[Request], Machine]:
    """The FastAPI dependency of every `/api/v1/agent/*` endpoint (here and
    in server/agent_jobs_api.py): the enabled machine whose bearer
    credentials the request carries, or 401 (one line, never why)."""

    def agent(request: Request) -> Machine:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        machine = agents.authenticate(value.strip()) if scheme.lower() == "bearer" else None
        if machine is None:
            raise HTTPException(401, _BAD_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})
        return machine

    return agent


def _add_agent_routes(app: FastAPI, guards: Guards, agents: Agents, intake: Intake) -> None:
    audit = guards.audit
    Agent = Annotated[Machine, Depends(agent_dependency(agents))]

    @app.post("/api/v1/agent/enroll")
    def enroll(body: EnrollRequest, request: Request) -> dict[str, Any]:
        enrolled = agents.enroll(body.token)
        if enrolled is None:
            audit(request, "agent.enroll", "-", "denied", None)
            raise HTTPException(401, "invalid, used or expired enrollment token")
        audit(request, "agent.enroll", enrolled.machine, "ok", None)
        return {
            "machine": enrolled.machine,
            "agent_id": enrolled.agent_id,
            "secret": enrolled.secret,
            "repository": intake.info(),
        }

    @app.get("/api/v1/agent/me")
    def me(who: Agent) -> dict[str, Any]:
        return {"machine": who.name, "cluster": who.cluster, "repository": intake.info()}

    @app.post("/api/v1/agent/chunks/missing")
    def missing(body: MissingRequest, who: Agent) -> dict[str, list[str]]:
        absent = intake.missing([bytes.fromhex(h) for h in body.ids], who.name)
        return {"missing": [c.hex() for c in absent]}

    slots = asyncio.Semaphore(UPLOAD_SLOTS)

    async def upload(request: Request, who: Agent) -> dict[str, int]:
        # The body is read only with a slot: however many agents send at
        # once, the server holds at most UPLOAD_SLOTS bundles (and their
        # sealed forms); the others wait in their sockets.
        try:
            async with slots:
                blob = await request.body()
                stored = await run_in_threadpool(intake.store, blob, who.name)
        except IntegrityError as err:
            await run_in_threadpool(audit, request, "agent.upload", who.name, "refused", None)
            raise HTTPException(422, f"bundle refused: {str(err)[:200]}") from None
        return {"received": stored.received, "added": stored.added, "bytes": stored.bytes_added}

    # one operation per method: each its own operationId in the schema
    bundle = {"requestBody": {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}}  # fmt: skip
    for method in ("PUT", "POST"):
        app.add_api_route("/api/v1/agent/chunks", upload, methods=[method],
                          operation_id=f"agent_chunks_{method.lower()}",
                          openapi_extra=bundle)  # fmt: skip

    @app.post("/api/v1/agent/chunks/read")
    def read(body: ReadRequest, who: Agent) -> Response:
        try:
            blob = intake.read([(bytes.fromhex(c.id), chunk_type(c.type)) for c in body.chunks])
        except ChunkNotFound as err:
            raise HTTPException(404, str(err)[:200]) from None
        except IntegrityError as err:
            raise HTTPException(500, f"repository: {str(err)[:200]}") from None
        return Response(blob, media_type=BUNDLE_TYPE)

    @app.get("/api/v1/agent/points")
    def points(who: Agent) -> list[dict[str, Any]]:
        return intake.points(who.name, who.cluster)

    @app.get("/api/v1/agent/seeds")
    def seeds(who: Agent) -> list[dict[str, Any]]:
        return seed_docs(intake.repo)

    @app.get("/api/v1/agent/seeds/{ref}")
    def seed(ref: str, who: Agent) -> dict[str, Any]:
        found = seed_doc(intake.repo, ref)
        if found is None:
            raise HTTPException(404, f"no seed named {printable(ref[:64])}")
        return found

    @app.post("/api/v1/agent/points", status_code=201)
    def commit(body: CommitRequest, who: Agent, request: Request) -> dict[str, str]:
        try:
            point_id = intake.commit(agents.catalog, who, body.point, body.commit_id)
        except UsageError as err:
            audit(request, "agent.commit", who.name, "refused", None)
            raise HTTPException(422, str(err)) from None
        except StrongroomError:
            audit(request, "agent.commit", who.name, "failed", None)
            raise
        audit(request, "agent.commit", f"{who.name} {point_id[:16]}", "ok", None)
        return {"id": point_id}


def _add_vm_lease_routes(app: FastAPI, guards: Guards, agents: Agents, leases: VmLeases) -> None:
    """A VM's lease for the nodes of its cluster (services/agent_vm_leases.py):
    403 for a machine in no cluster, 409 when busy (taking) or not held
    (renewing, verifying), 400 for a VM name the rules refuse."""
    audit = guards.audit
    Agent = Annotated[Machine, Depends(agent_dependency(agents))]
    base = "/api/v1/agent/vms/{vm}/lease"

    def _refused(err: StrongroomError) -> HTTPException:
        if isinstance(err, NotInCluster):
            return HTTPException(403, str(err))
        if isinstance(err, LeaseBusy | LeaseLost):
            return HTTPException(409, str(err)[:300])
        return HTTPException(400, str(err)[:300])

    @app.post(base, status_code=201)
    def take(vm: str, body: LeaseTake, who: Agent, request: Request) -> dict[str, Any]:
        try:
            taken = leases.acquire(who, vm, body.ttl)
        except (UsageError, LeaseBusy) as err:
            audit(request, "agent.vm_lease", who.name, "refused", None)
            raise _refused(err) from None
        audit(request, "agent.vm_lease", f"{who.name} {vm}", "ok", None)
        inherited = taken.inherited
        return {
            "holder": taken.holder,
            "expires": taken.expires,
            "cluster": who.cluster,
            "inherited": None
            if inherited is None
            else {"host": inherited.host, "taken": inherited.taken, "notes": inherited.data},
        }

    @app.post(base + "/renew")
    def renew(vm: str, body: LeaseRenew, who: Agent) -> dict[str, float]:
        try:
            return {"expires": leases.renew(who, vm, body.holder, body.ttl, body.notes)}
        except (UsageError, LeaseLost) as err:
            raise _refused(err) from None

    @app.post(base + "/verify")
    def verify(vm: str, body: LeaseHeld, who: Agent) -> dict[str, float]:
        try:
            return {"expires": leases.verify(who, vm, body.holder)}
        except (UsageError, LeaseLost) as err:
            raise _refused(err) from None

    @app.post(base + "/release")
    def release(vm: str, body: LeaseHeld, who: Agent) -> dict[str, bool]:
        try:
            leases.release(who, vm, body.holder)
        except UsageError as err:
            raise _refused(err) from None
        return {"released": True}
