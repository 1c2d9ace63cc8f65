"""Who may call an endpoint: the FastAPI dependencies every router of the
API shares (the session cookie and the CSRF header, or a user's API token
as `Authorization: Bearer srt_...`; the roles) and the audit log's one way
to write a row.

Routers live in their own modules (`add_..._routes(app, guards, ...)`) and
name their callers with this module's `Caller`, `Operator` and `Admin`, so
that every endpoint checks the same way. The `Guards` of an application is
`app.state.guards` (set by `create_app`).
"""

# No `from __future__ import annotations`: FastAPI reads the dependencies'
# annotations at definition time.

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from strongroom.services.accounts import TOKEN_PREFIX, Accounts, Role, SignedIn

COOKIE = "strongroom_session"
CSRF_HEADER = "X-CSRF-Token"
_CHANGES = {"POST", "PUT", "PATCH", "DELETE"}
_RANK = {Role.READ_ONLY: 0, Role.OPERATOR: 1, Role.ADMINISTRATOR: 2}


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


class Guards:
    """The checks over one `Accounts` (sessions, roles) and the audit log."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def audit(
        self, request: Request, action: str, target: str, outcome: str, user: str | None
    ) -> None:
        """One row of the audit log; `target` is cut to 200 characters."""
        self.accounts.audit(action, target[:200], outcome, user, client_address(request))

    def caller(self, request: Request) -> SignedIn:
        token = request.cookies.get(COOKIE)
        if not token:
            scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and secret.startswith(TOKEN_PREFIX):
                found = self.accounts.api_token(secret.strip())
                if found is None:
                    raise HTTPException(401, "unknown or expired API token")
                return found  # a bearer, not a cookie: no CSRF to forge
        signed = self.accounts.session(token) if token else None
        if signed is None:
            raise HTTPException(401, "not signed in")
        if request.method in _CHANGES:
            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), signed.csrf.encode()):
                self.audit(request, "csrf", request.url.path, "denied", signed.user.name)
                raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
        return signed

    def _at_least(self, request: Request, who: SignedIn, role: Role, what: str) -> SignedIn:
        if _RANK[who.user.role] < _RANK[role]:
            where = f"{request.method} {request.url.path}"
            self.audit(request, where, "-", "denied", who.user.name)
            raise HTTPException(403, what)
        return who

    def operator(self, request: Request) -> SignedIn:
        return self._at_least(request, self.caller(request), Role.OPERATOR, "operators only")

    def administrator(self, request: Request) -> SignedIn:
        who = self.caller(request)
        return self._at_least(request, who, Role.ADMINISTRATOR, "administrators only")


def guards_of(request: Request) -> Guards:
    guards: Guards = request.app.state.guards
    return guards


def _signed_in(request: Request) -> SignedIn:
    return guards_of(request).caller(request)


def _operator(request: Request) -> SignedIn:
    return guards_of(request).operator(request)


def _administrator(request: Request) -> SignedIn:
    return guards_of(request).administrator(request)


# What endpoints take: signed in; at least an operator; an administrator.
Caller = Annotated[SignedIn, Depends(_signed_in)]
Operator = Annotated[SignedIn, Depends(_operator)]
Admin = Annotated[SignedIn, Depends(_administrator)]
