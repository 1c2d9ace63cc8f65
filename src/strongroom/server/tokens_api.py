"""API tokens for scripts (docs/server.md, "API tokens"): a signed-in user
makes named bearer tokens that act as that user, with the user's role.

- `GET /api/v1/tokens`: the caller's tokens (name, created, expires,
  last used; never the secret);
- `POST /api/v1/tokens {"name", "days"?}` (201): a new token, its secret in
  this answer only; from a session (CSRF header) only: a token cannot
  make tokens (403);
- `DELETE /api/v1/tokens/{name}` (204): removes one of the caller's.

Scripts send `Authorization: Bearer srt_...` (guards.py) and no CSRF
header. Wiring only: services/accounts.py makes and checks tokens; each
change is an audit row (`token.create`, `token.remove`), never the secret.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations.

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from strongroom.errors import UsageError
from strongroom.server.guards import Caller, Guards
from strongroom.services.accounts import MAX_TOKEN_DAYS, ApiToken


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    days: int | None = Field(default=None, ge=1, le=MAX_TOKEN_DAYS)


def _doc(token: ApiToken) -> dict[str, Any]:
    def when(at: Any) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "name": token.name,
        "created": token.created.isoformat(),
        "expires": when(token.expires),
        "last_used": when(token.last_used),
    }


def add_token_routes(app: FastAPI, guards: Guards) -> None:
    accounts, audit = guards.accounts, guards.audit

    @app.get("/api/v1/tokens")
    def list_tokens(who: Caller) -> list[dict[str, Any]]:
        return [_doc(t) for t in accounts.catalog.list_api_tokens(who.user.name)]

    @app.post("/api/v1/tokens", status_code=201)
    def create_token(body: NewToken, who: Caller, request: Request) -> dict[str, Any]:
        if who.by_token:
            audit(request, "token.create", body.name, "denied", who.user.name)
            raise HTTPException(403, "sign in to make API tokens (a token cannot)")
        if any(t.name == body.name for t in accounts.catalog.list_api_tokens(who.user.name)):
            audit(request, "token.create", body.name, "failed", who.user.name)
            raise HTTPException(409, "you have a token of that name already")
        try:
            token, secret = accounts.create_api_token(who.user.name, body.name, body.days)
        except UsageError as err:
            audit(request, "token.create", body.name, "failed", who.user.name)
            raise HTTPException(400, str(err)) from None
        audit(request, "token.create", body.name, "ok", who.user.name)
        return {**_doc(token), "token": secret}

    @app.delete("/api/v1/tokens/{name}", status_code=204)
    def remove_token(name: str, who: Caller, request: Request) -> None:
        if not accounts.catalog.remove_api_token(who.user.name, name[:64]):
            raise HTTPException(404, "no token of yours by that name")
        audit(request, "token.remove", name[:64], "ok", who.user.name)
