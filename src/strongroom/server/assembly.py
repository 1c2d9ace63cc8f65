"""The whole server as `strongroom server` runs it: the core API and every
router (operations, metrics, sign-in limits, media, agents, agents' jobs,
the dashboard, API tokens) bound to their services over one catalog and
one repository.

One function builds it, so the command and the tests (schemathesis over
the whole API, tests/server/test_schemathesis_all.py) cannot drift apart.
Contract: nothing is started (the scheduler and job runner `loops` are
the caller's to start and stop); `close()` releases what the server holds
open (the agents' upload session), once the app has stopped serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import FastAPI

from strongroom.config import Settings
from strongroom.errors import StrongroomError
from strongroom.server.agent_api import agent_routes
from strongroom.server.agent_jobs_api import agent_jobs_routes
from strongroom.server.app import AddRoutes, create_app
from strongroom.server.dashboard import add_dashboard_routes
from strongroom.server.media_api import add_media_routes
from strongroom.server.metrics import add_metrics_routes
from strongroom.server.ops_api import add_ops_routes
from strongroom.server.ratelimit import add_ratelimit_routes
from strongroom.server.tokens_api import add_token_routes
from strongroom.services.accounts import Accounts
from strongroom.services.agent_intake import Intake
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.agents import Agents
from strongroom.services.dashboard import RepositoryView
from strongroom.services.media_views import MediaViews
from strongroom.services.metrics import Metrics
from strongroom.services.operations import ServerLoops, server_operations
from strongroom.services.ratelimit import SignInLimiter

log = logging.getLogger(__name__)


@dataclass
class Assembled:
    """A built server: its app, its loops (not started), what to close."""

    app: FastAPI
    loops: ServerLoops
    intake: Intake
    view: RepositoryView

    def warm(self) -> threading.Thread:
        """Read the point list in the background, so that the first page after
        a start does not wait for it (from the catalog's memory when another
        start read it; from the repository once otherwise)."""

        def read() -> None:
            try:
                count = len(self.view.points())
            except StrongroomError as err:
                log.warning("reading the point list at start failed: %s", err)
            else:
                log.info("point list ready: %d points", count)

        thread = threading.Thread(target=read, name="strongroom-warm", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.intake.close()


def assemble(
    accounts: Accounts,
    settings: Settings,
    password: bytes,
    *,
    secure_cookies: bool = False,
    points: Callable[[], list[dict[str, Any]]] | None = None,
    worker: str | None = None,
) -> Assembled:
    """The server over `accounts`' catalog and `settings.repository` (opened
    with `password`); `points` lists the repository's points (default:
    services/server_points.py's lister); `worker` names this process's job
    runner (default: host and process id)."""
    location, catalog = settings.repository, accounts.catalog
    # one cached point list for all readers, remembered in the catalog across starts
    # refreshed behind the pages every 10 s; what agents commit here is listed at once
    view = RepositoryView(location, password, ttl=10.0, memo=catalog, background=True)
    listed = points or (lambda: [{"id": p.id, **p.to_doc()} for p in view.points()])
    agents = Agents(catalog)
    agent_jobs = AgentJobs.over(catalog, view)
    ops, loops = server_operations(
        catalog,
        location,
        password,
        worker=worker,
        agent_specs=agent_jobs.check_spec,
        settings=settings,
    )
    metrics = Metrics(catalog, location, password, points=view.points)
    intake = Intake(location, password, on_commit=view.note)  # agents' uploads: one session
    routers: list[AddRoutes] = [
        partial(add_ops_routes, ops=ops),
        partial(add_metrics_routes, snapshot=metrics.snapshot),
        partial(add_ratelimit_routes, limiter=SignInLimiter(catalog)),
        partial(add_media_routes, views=MediaViews(catalog, settings, location, password)),
        add_token_routes,
        agent_jobs_routes(agents, agent_jobs),
        agent_routes(agents, intake),
        partial(
            add_dashboard_routes,
            view=view,
            settings=settings,
            secure_cookies=secure_cookies,
            agent_jobs=agent_jobs,
        ),
    ]
    try:
        app = create_app(accounts, listed, secure_cookies=secure_cookies, routers=routers)
    except BaseException:
        intake.close()
        raise
    return Assembled(app, loops, intake, view)


__all__ = ["Assembled", "assemble"]
