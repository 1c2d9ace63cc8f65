"""Sign-in rate limiting at the door: an ASGI middleware around
`POST /api/v1/session` over services/ratelimit.py (kept in the catalog:
it holds across server processes).

Before the sign-in runs, a blocked name or address is answered
`429 {"error": ...}` with `Retry-After`, and an audit row `session.create`
with outcome `limited`: no password is verified (no argon2 work). After
it, a 401 counts a failure and a 200 clears the name's count. The body is
read here (bounded like limits.BodyLimit) and handed on unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.server.guards import Guards
from strongroom.server.limits import MAX_BODY
from strongroom.services.ratelimit import SignInLimiter

PATH = "/api/v1/session"


class SignInLimit:
    def __init__(self, app: ASGIApp, limiter: SignInLimiter, guards: Guards) -> None:
        self.app = app
        self.limiter = limiter
        self.guards = guards

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more and len(body) <= MAX_BODY:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
        name = _name(bytes(body)) if not more else None
        address = scope["client"][0] if scope.get("client") else None
        if name is not None:
            wait = await run_in_threadpool(self.limiter.retry_after, name, address)
            if wait:
                await run_in_threadpool(
                    self.guards.accounts.audit, "session.create", name, "limited", None, address
                )
                await _too_many(send, wait)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": more}

        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, replay, watch)
        if name is not None and status == 401:
            await run_in_threadpool(self.limiter.failed, name, address)
        elif name is not None and status == 200:
            await run_in_threadpool(self.limiter.succeeded, name)


def _name(body: bytes) -> str | None:
    """The name a sign-in tries, when the body is the JSON the API takes."""
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):
        return None
    name = doc.get("name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) and 0 < len(name) <= 64 else None


async def _too_many(send: Send, wait: int) -> None:
    data = json.dumps({"error": "too many failed sign-ins; try again later"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"retry-after", str(wait).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def add_ratelimit_routes(app: FastAPI, guards: Guards, limiter: SignInLimiter) -> None:
    """Guard the sign-in of `app` (an AddRoutes: no endpoints of its own)."""
    app.add_middleware(SignInLimit, limiter=limiter, guards=guards)
