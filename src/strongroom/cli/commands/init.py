"""strongroom init: create a repository."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.services.session import init_repository


def create_repository(app: App) -> str:
    """Create the configured repository; returns the key object's name. Shared with
    `backup`, which creates the default repository on first use."""
    password = app.password(confirm=True, prompt="password for the new repository")
    repo = init_repository(app.settings.repository, password, app.settings.compression)
    try:
        return repo.key_name
    finally:
        repo.close()


@click.command()
@pass_app
def init(app: App) -> None:
    """Create a new, encrypted repository."""
    location = app.settings.repository
    key = create_repository(app)
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
