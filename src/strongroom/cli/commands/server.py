"""strongroom server: the backup server's HTTP API (docs/server.md)."""

from __future__ import annotations

import sys
from functools import partial

import click

from strongroom.cli.context import App, pass_app
from strongroom.errors import UsageError
from strongroom.server import create_app, parse_listen, run
from strongroom.server.agent_api import agent_routes
from strongroom.server.agent_jobs_api import agent_jobs_routes
from strongroom.server.app import AddRoutes
from strongroom.server.dashboard import add_dashboard_routes
from strongroom.server.media_api import add_media_routes
from strongroom.server.metrics import add_metrics_routes
from strongroom.server.ops_api import add_ops_routes
from strongroom.server.ratelimit import add_ratelimit_routes
from strongroom.server.run import DEFAULT_LISTEN
from strongroom.services.accounts import Accounts, check_password
from strongroom.services.agent_intake import Intake
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.agents import Agents
from strongroom.services.dashboard import RepositoryView
from strongroom.services.media_views import MediaViews
from strongroom.services.metrics import Metrics
from strongroom.services.operations import ServerLoops, server_operations
from strongroom.services.ratelimit import SignInLimiter
from strongroom.services.server_points import point_lister


@click.command()
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="ADDRESS:PORT",
    help="Where to listen ([::1]:8420 for IPv6).",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Run no schedules and no server-side jobs in this process (API only).",
)
@pass_app
def server(
    app: App, listen: str, tls_cert: str | None, tls_key: str | None, no_scheduler: bool
) -> None:
    """Serve the HTTP API over the repository and the catalog of the settings."""
    where = parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    password = app.password()  # once: a terminal prompt is not repeated
    points = point_lister(app.settings.repository, password)
    points()  # the repository opens with this password, or the server does not start
    intake = Intake(app.settings.repository, password)  # agents' uploads: one session
    try:
        accounts = Accounts.open(app.settings.catalog)
    except BaseException:
        intake.close()
        raise
    try:
        created = accounts.ensure_administrator(_ask_administrator_password)
        if created is not None:
            name, generated = created
            if generated is None:
                app.out.notice(f"administrator {name} created")
            else:
                # shown once, here, to whoever started the server: never logged
                click.echo(f"administrator {name} created; its password (shown only now): "
                           f"{generated}")  # fmt: skip
        view = RepositoryView(app.settings.repository, password)
        agents = Agents(accounts.catalog)
        agent_jobs = AgentJobs.over(accounts.catalog, view)
        routers, loops = _operations(app, accounts, password, agent_jobs)
        routers.append(agent_jobs_routes(agents, agent_jobs))
        scheme = "https" if tls_cert else "http"
        app.out.notice(f"strongroom server starting on {scheme}://{where}/ (API: /api/v1/)")
        secure = tls_cert is not None
        dashboard = partial(
            add_dashboard_routes,
            view=view,
            settings=app.settings,
            secure_cookies=secure,
            agent_jobs=agent_jobs,
        )
        if not no_scheduler:
            loops.start()
        try:
            run(
                create_app(
                    accounts,
                    points,
                    secure_cookies=secure,
                    routers=[*routers, agent_routes(agents, intake), dashboard],
                ),
                where,
                tls_cert=tls_cert,
                tls_key=tls_key,
            )
        finally:
            loops.stop()  # a job in flight runs to its end first
    finally:
        accounts.close()
        intake.close()


def _operations(
    app: App, accounts: Accounts, password: bytes, agent_jobs: AgentJobs
) -> tuple[list[AddRoutes], ServerLoops]:
    """The routers beyond the core API (jobs, schedules, audit, events,
    metrics, sign-in limits, media) and this process's scheduler and job
    runner (not started)."""
    catalog, repository = accounts.catalog, app.settings.repository
    ops, loops = server_operations(catalog, repository, password, agent_specs=agent_jobs.check_spec)
    metrics = Metrics(catalog, repository, password)
    views = MediaViews(catalog, app.settings, repository, password)
    routers: list[AddRoutes] = [
        partial(add_ops_routes, ops=ops),
        partial(add_metrics_routes, snapshot=metrics.snapshot),
        partial(add_ratelimit_routes, limiter=SignInLimiter(catalog)),
        partial(add_media_routes, views=views),
    ]
    return routers, loops


def _ask_administrator_password() -> str | None:
    """From the terminal when there is one; None: generate one."""
    if not sys.stdin.isatty():
        return None
    value: str = click.prompt(
        "Password for the first administrator (empty: generate one)",
        hide_input=True,
        confirmation_prompt=True,
        default="",
        show_default=False,
        err=True,
    )
    return check_password(value) if value else None
