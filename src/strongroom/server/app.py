"""The HTTP API, version 1 (`/api/v1`): sign-in sessions, the caller, users
(administrators only), the repository's points, health.

Contract:
- answers are JSON; errors are `{"error": "one line"}` with a 4xx status,
  never a traceback, a password, a token or the request's input echoed;
- a session is the `strongroom_session` cookie (HttpOnly, SameSite=Strict,
  Secure when served over TLS); a request that changes state (POST, PUT,
  PATCH, DELETE) with that cookie must also carry `X-CSRF-Token`, the token
  sign-in and `/me` answer (403 without it);
- roles: read-only < operator < administrator; users' endpoints need an
  administrator (403 otherwise); the last enabled administrator cannot be
  removed, disabled or demoted (409);
- every action (sign-in, sign-out, each users' change, reading points) is a
  row of the audit log with its outcome and the client's address.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints'
# annotations at definition time, and some name aliases local to create_app.

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from strongroom import __version__
from strongroom.errors import StrongroomError
from strongroom.server.guards import COOKIE, CSRF_HEADER, Admin, Caller, Guards
from strongroom.server.limits import BodyLimit
from strongroom.services.accounts import MAX_PASSWORD, Accounts, Role, SignedIn, User

__all__ = ["COOKIE", "CSRF_HEADER", "AddRoutes", "create_app"]

Points = Callable[[], list[dict[str, Any]]]
AddRoutes = Callable[[FastAPI, Guards], None]
RoleName = Literal["administrator", "operator", "read-only"]


class SignIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    role: RoleName


class UserChange(BaseModel):
    password: str | None = Field(default=None, min_length=1, max_length=MAX_PASSWORD)
    role: RoleName | None = None
    disabled: bool | None = None


def _user_doc(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": str(user.role),
        "created": user.created.isoformat(),
        "disabled": user.disabled,
    }


def create_app(
    accounts: Accounts,
    points: Points,
    *,
    secure_cookies: bool = False,
    routers: Sequence[AddRoutes] = (),
) -> FastAPI:
    """The application; `points` lists the repository's points (services/
    server_points.py), `secure_cookies` when served over TLS; each of
    `routers` adds its endpoints (`add_..._routes(app, guards)`, bound to
    its services by the caller)."""
    app = FastAPI(
        title="strongroom",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(StrongroomError)
    async def unavailable(_request: Request, exc: StrongroomError) -> JSONResponse:
        # the catalog (or the repository) failed: its one line, passwords masked
        return JSONResponse({"error": str(exc).splitlines()[0][:500]}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # name the fields, never echo their values (a password may be one)
        fields = sorted(
            {".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in exc.errors()}
        )
        return JSONResponse(
            {"error": f"invalid request: {', '.join(f for f in fields if f) or 'body'}"},
            status_code=422,
        )

    guards = app.state.guards = Guards(accounts)
    audit = guards.audit

    @app.get("/api/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.post("/api/v1/session")
    def sign_in(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
        signed = accounts.sign_in(body.name, body.password)
        if signed is None:
            audit(request, "session.create", body.name, "failed", None)
            raise HTTPException(401, "wrong name or password")
        audit(request, "session.create", body.name, "ok", signed.user.name)
        response.set_cookie(
            COOKIE,
            signed.token,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            path="/",
            expires=signed.expires,
        )
        return {**_me(signed), "csrf_token": signed.csrf}

    @app.delete("/api/v1/session", status_code=204)
    def sign_out(who: Caller, request: Request, response: Response) -> None:
        accounts.sign_out(who.token)
        audit(request, "session.delete", who.user.name, "ok", who.user.name)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    @app.get("/api/v1/me")
    def me(who: Caller) -> dict[str, Any]:
        return {**_me(who), "csrf_token": who.csrf}

    @app.get("/api/v1/points", response_model=list[dict[str, Any]])
    def list_points(who: Caller, request: Request) -> Response:
        try:
            found = points()
        except StrongroomError as err:
            audit(request, "points.list", "repository", "failed", who.user.name)
            raise HTTPException(503, f"repository: {err}") from None
        audit(request, "points.list", "repository", "ok", who.user.name)
        # Serialised directly: FastAPI's validation and encoder of 10,000
        # point documents took 1.8 s; the documents are plain JSON already.
        body = json.dumps(found, separators=(",", ":"))  # ASCII: any name survives
        return Response(body.encode("ascii"), media_type="application/json")

    @app.get("/api/v1/users")
    def list_users(who: Admin, request: Request) -> list[dict[str, Any]]:
        audit(request, "users.list", "users", "ok", who.user.name)
        return [_user_doc(u) for u in accounts.catalog.list_users()]

    @app.get("/api/v1/users/{name}")
    def get_user(name: str, who: Admin, request: Request) -> dict[str, Any]:
        audit(request, "user.show", name[:64], "ok", who.user.name)
        return _user_doc(_find(accounts, name))

    @app.post("/api/v1/users", status_code=201)
    def create_user(body: NewUser, who: Admin, request: Request) -> dict[str, Any]:
        if accounts.catalog.find_user(body.name) is not None:
            audit(request, "user.create", body.name, "failed", who.user.name)
            raise HTTPException(409, f"user {body.name} already exists")
        try:
            user = accounts.create_user(body.name, body.password, Role(body.role))
        except StrongroomError as err:
            audit(request, "user.create", body.name, "failed", who.user.name)
            raise HTTPException(400, str(err)) from None
        audit(request, "user.create", body.name, "ok", who.user.name)
        return _user_doc(user)

    @app.patch("/api/v1/users/{name}")
    def change_user(name: str, body: UserChange, who: Admin, request: Request) -> dict[str, Any]:
        user = _find(accounts, name)
        demoted = body.role is not None and body.role != "administrator"
        if (body.disabled or demoted) and _last_administrator(accounts, user):
            audit(request, "user.change", name, "failed", who.user.name)
            raise HTTPException(409, f"{name} is the last administrator")
        try:
            if body.password is not None:
                accounts.set_password(name, body.password)
            changed = accounts.catalog.update_user(
                name,
                role=Role(body.role) if body.role is not None else None,
                disabled=body.disabled,
            )
        except StrongroomError as err:
            audit(request, "user.change", name, "failed", who.user.name)
            raise HTTPException(400, str(err)) from None
        audit(request, "user.change", name, "ok", who.user.name)
        return _user_doc(changed)

    @app.delete("/api/v1/users/{name}", status_code=204)
    def remove_user(name: str, who: Admin, request: Request) -> None:
        user = _find(accounts, name)
        if _last_administrator(accounts, user):
            audit(request, "user.remove", name, "failed", who.user.name)
            raise HTTPException(409, f"{name} is the last administrator")
        accounts.catalog.remove_user(name)
        audit(request, "user.remove", name, "ok", who.user.name)

    for add_routes in routers:
        add_routes(app, guards)
    return app


def _me(who: SignedIn) -> dict[str, Any]:
    expires = who.expires.isoformat() if who.expires is not None else None
    return {"name": who.user.name, "role": str(who.user.role), "expires": expires}


def _find(accounts: Accounts, name: str) -> User:
    user = accounts.catalog.find_user(name) if len(name) <= 64 else None
    if user is None:
        raise HTTPException(404, f"no user {name[:64]}")
    return user


def _last_administrator(accounts: Accounts, user: User) -> bool:
    return (
        user.role is Role.ADMINISTRATOR
        and not user.disabled
        and accounts.catalog.count_administrators() <= 1
    )
