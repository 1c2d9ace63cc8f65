"""Bounded request bodies: an ASGI middleware that answers 413 before the
application reads more than `limit` bytes of a body, whether the client
declared a Content-Length or streamed it chunked."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 64 * 1024  # the API's bodies are a few small JSON fields
# The exceptions, by exact path: an agent's bundle of chunks (repository/
# bundle.py MAX_BUNDLE; a test checks they agree) and its batched question
# of which chunk ids are missing (8192 ids of 64 hex digits, quoted), and
# its point document (its summary lists the backup's warnings).
LARGER_BODIES = {
    "/api/v1/agent/chunks": 32 << 20,
    "/api/v1/agent/chunks/missing": 1 << 20,
    "/api/v1/agent/points": 4 << 20,
}


class BodyLimit:
    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY, larger: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = limit
        self.larger = LARGER_BODIES if larger is None else larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.default)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _error(send, 400, "bad Content-Length")
                    return
                if declared > limit:
                    await _error(send, 413, f"request body over {limit} bytes")
                    return
        # read it all (bounded), then hand it to the app in one piece
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > limit:
                await _error(send, 413, f"request body over {limit} bytes")
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _error(send: Send, status: int, message: str) -> None:
    payload: dict[str, Any] = {"error": message}
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
