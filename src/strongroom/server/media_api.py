"""Media libraries over the API, from the catalog (services/media_views.py).

| endpoint | who |
| --- | --- |
| `GET /api/v1/libraries`, `GET /api/v1/libraries/{name}`, `GET /api/v1/media` | signed in |
| `POST /api/v1/libraries/{name}/inventory` `{"detailed": bool}` | operator |

An inventory runs in the request (a fast one reads the changer's status,
seconds); a library busy with another job answers 409, one that does not
exist 404, a changer that fails 502 with its one line. Copying points to
media and bringing a point back from media are jobs (`POST /api/v1/jobs`
with `copy-to-media` or `restore-from-media`: server/ops_api.py,
services/server_media_jobs.py): they move cartridges for minutes.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations.

from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from strongroom.errors import MediaError, MediaNotFound
from strongroom.server.guards import Caller, Guards, Operator
from strongroom.services.media_views import MAX_NAME, MediaViews

LibraryName = Annotated[str, Path(min_length=1, max_length=MAX_NAME)]


class InventoryRequest(BaseModel):
    detailed: bool = False


def add_media_routes(app: FastAPI, guards: Guards, views: MediaViews) -> None:
    audit = guards.audit

    @app.get("/api/v1/libraries")
    def libraries(who: Caller) -> list[dict[str, Any]]:
        return views.libraries()

    @app.get("/api/v1/libraries/{name}")
    def library(name: LibraryName, who: Caller) -> dict[str, Any]:
        found = views.library(name)
        if found is None:
            raise HTTPException(404, "no such library in the catalog")
        return found

    @app.get("/api/v1/media")
    def media(who: Caller) -> list[dict[str, Any]]:
        return views.media()

    @app.post("/api/v1/libraries/{name}/inventory")
    async def inventory(
        name: LibraryName, body: InventoryRequest, who: Operator, request: Request
    ) -> dict[str, Any]:
        if not views.known(name):
            raise HTTPException(404, "no such library")
        kind = "detailed" if body.detailed else "fast"
        try:
            report = await run_in_threadpool(views.inventory, name, detailed=body.detailed)
        except MediaNotFound:
            audit(request, "library.inventory", name, "failed", who.user.name)
            raise HTTPException(404, "no such library") from None
        except MediaError as err:
            audit(request, "library.inventory", name, "failed", who.user.name)
            busy = "busy" in str(err)
            raise HTTPException(409 if busy else 502, str(err).splitlines()[0][:300]) from None
        audit(request, "library.inventory", f"{name} ({kind})", "ok", who.user.name)
        return report
