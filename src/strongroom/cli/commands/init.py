"""strongroom init: create a repository."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.services.session import MIN_PASSWORD_LENGTH, password_warning
from strongroom.services.session import create_repository as create


def create_repository(app: App, insecure_password: bool = False) -> str:
    """Create the configured repository (services/session.py refuses a weak
    password unless `insecure_password`); returns the key object's name. Shared
    with `backup`, which creates the default repository on first use."""
    password = app.password(confirm=True, prompt="password for the new repository")
    weak = password_warning(password)
    if weak and insecure_password:
        app.out.notice(f"warning: {weak}")
    return create(
        app.settings.repository,
        password,
        app.settings.compression,
        compression_mode=app.settings.compression_mode,
        insecure_password=insecure_password,
    )


@click.command()
@click.option(
    "--insecure-password",
    is_flag=True,
    help=f"Accept a password shorter than {MIN_PASSWORD_LENGTH} characters.",
)
@pass_app
def init(app: App, insecure_password: bool) -> None:
    """Create a new, encrypted repository."""
    location = app.settings.repository
    key = create_repository(app, insecure_password)
    if app.out.json:
        app.out.document(
            {"message_type": "initialized", "repository": location, "key": key.rsplit("/", 1)[-1]}
        )
        return
    app.out.info(f"created repository at {location}")
    app.out.notice(
        f"Its key is stored in the repository ({key}), protected by your password.\n"
        "Keep the password safe: without it the data cannot be restored by anyone."
    )
