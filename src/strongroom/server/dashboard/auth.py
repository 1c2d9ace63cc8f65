"""Who is looking at a dashboard page, and may they do what they post.

Pages use the API's session (the `strongroom_session` cookie, accounts'
sessions). A browser form cannot send the API's `X-CSRF-Token` header, so a
dashboard POST carries the same token as the form field `csrf_token` (htmx
requests may send the header instead); compared in constant time, refused
with 403 and an audit row. Sign-in itself is guarded by a double-submit
token: a random cookie set by the sign-in page and the same value in the
form, which a cross-site form cannot know (SameSite=Strict keeps the cookie
home). Roles rank read-only < operator < administrator; a refusal is 403
and an audit row naming the method and path.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from fastapi import Request

from strongroom.server.guards import COOKIE, CSRF_HEADER, Guards
from strongroom.services.accounts import Role, SignedIn

SIGNIN_COOKIE = "strongroom_signin"
MAX_FIELDS = 2000
_RANK = {Role.READ_ONLY: 0, Role.OPERATOR: 1, Role.ADMINISTRATOR: 2}

Form = dict[str, list[str]]


class NeedSignIn(Exception):
    """No valid session: the page answers with the sign-in page."""


class PageError(Exception):
    """A 4xx (or 503) answered as a small HTML page with one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_form(request: Request) -> Form:
    """The url-encoded form of a POST (the body is already bounded by the
    server's body limit); 415 for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise PageError(415, "send the form as application/x-www-form-urlencoded")
    body = await request.body()
    try:
        return parse_qs(body.decode("utf-8"), max_num_fields=MAX_FIELDS, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "the form is not readable") from None


def field(form: Form, name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default


def at_least(role: Role, wanted: Role) -> bool:
    return _RANK[role] >= _RANK[wanted]


def viewer(guards: Guards, request: Request) -> SignedIn:
    """The signed-in caller of a page (NeedSignIn otherwise)."""
    token = request.cookies.get(COOKIE)
    signed = guards.accounts.session(token) if token else None
    if signed is None:
        raise NeedSignIn()
    return signed


def require_role(guards: Guards, request: Request, who: SignedIn, role: Role) -> None:
    if not at_least(who.user.role, role):
        guards.audit(request, f"{request.method} {request.url.path}", "-", "denied", who.user.name)
        raise PageError(403, f"{role}s only" if role is Role.OPERATOR else "administrators only")


def actor(guards: Guards, request: Request, form: Form, role: Role) -> SignedIn:
    """The caller of a POST: signed in, the CSRF token right, `role` or above."""
    who = viewer(guards, request)
    given = field(form, "csrf_token") or request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode(), who.csrf.encode()):
        guards.audit(request, "csrf", request.url.path, "denied", who.user.name)
        raise PageError(403, "the form's CSRF token is missing or wrong: reload the page")
    require_role(guards, request, who, role)
    return who


def signin_token_ok(request: Request, form: Form) -> bool:
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    given = field(form, "signin_token")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), given.encode())
