"""strongroom init: create a repository."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.errors import UsageError
from strongroom.repository.keys import MIN_PASSWORD_LENGTH
from strongroom.services.session import init_repository


def password_warning(password: bytes) -> str | None:
    """Why `password` is too weak to protect a repository, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"the password is shorter than {MIN_PASSWORD_LENGTH} characters: "
            "anyone who can read the repository can guess it"
        )
    return None


def create_repository(app: App, insecure_password: bool = False) -> str:
    """Create the configured repository; returns the key object's name. Shared with
    `backup`, which creates the default repository on first use.

    A password shorter than MIN_PASSWORD_LENGTH is refused unless `insecure_password`
    (the repository's key file is public to whoever reads the storage)."""
    password = app.password(confirm=True, prompt="password for the new repository")
    weak = password_warning(password)
    if weak and not insecure_password:
        raise UsageError(f"{weak}; choose a longer one, or pass --insecure-password")
    if weak:
        app.out.notice(f"warning: {weak}")
    repo = init_repository(app.settings.repository, password, app.settings.compression)
    try:
        return repo.key_name
    finally:
        repo.close()


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
