"""strongroom server: the backup server's HTTP API (docs/server.md)."""

from __future__ import annotations

import sys

import click

from strongroom.cli.context import App, pass_app
from strongroom.errors import RepositoryNotFound, UsageError
from strongroom.server import parse_listen, run
from strongroom.server.assembly import assemble
from strongroom.server.run import DEFAULT_LISTEN
from strongroom.services.accounts import Accounts, check_password
from strongroom.services.server_points import check_repository


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
@click.option(
    "--init",
    "init_absent",
    is_flag=True,
    help="Create the repository with the password first when its location holds none "
    "(a container's first start); one that exists is only opened.",
)
@pass_app
def server(
    app: App,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    no_scheduler: bool,
    init_absent: bool,
) -> None:
    """Serve the HTTP API over the repository and the catalog of the settings."""
    where = parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    password = app.password()  # once: a terminal prompt is not repeated
    try:
        check_repository(app.settings.repository, password)  # or the server does not start
    except RepositoryNotFound:
        if not init_absent:
            raise
        _create(app, password)
    accounts = Accounts.open(app.settings.catalog)
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
        secure = tls_cert is not None
        built = assemble(accounts, app.settings, password, secure_cookies=secure)
        try:
            scheme = "https" if secure else "http"
            app.out.notice(f"strongroom server starting on {scheme}://{where}/ (API: /api/v1/)")
            built.warm()
            if not no_scheduler:
                built.loops.start()
            try:
                run(built.app, where, tls_cert=tls_cert, tls_key=tls_key)
            finally:
                built.loops.stop()  # a job in flight runs to its end first
        finally:
            built.close()
    finally:
        accounts.close()


def _create(app: App, password: bytes) -> None:
    """`--init` on an empty location: what `strongroom init` does with the
    settings' compression. Creating refuses a location that holds a
    repository (RepositoryExists); two servers creating at the same moment
    are not made safe here (docs/deploy.md: start the first one alone)."""
    from strongroom.services.session import create_repository, password_warning

    weak = password_warning(password)
    if weak:  # the server has no --insecure-password: `strongroom init` does
        raise UsageError(f"{weak}; --init creates no repository with it")
    create_repository(
        app.settings.repository,
        password,
        app.settings.compression,
        compression_mode=app.settings.compression_mode,
    )
    app.out.notice(f"created a new repository at {app.settings.repository}")


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
