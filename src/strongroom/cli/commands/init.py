"""strongroom init: create a repository."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.units import parse_size, size_bytes
from strongroom.services.session import MIN_PASSWORD_LENGTH, password_warning
from strongroom.services.session import create_repository as create


def create_repository(
    app: App,
    insecure_password: bool = False,
    chunker: tuple[int, int, int] | None = None,
    block_size: int | None = None,
) -> str:
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
        chunker=chunker,
        block_size=block_size,
    )


def _chunker_params(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int, int] | None:
    """`MIN,AVG,MAX` as sizes (`256K,1M,4M`), like borg's --chunker-params."""
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 3:
        raise click.BadParameter(f"{value!r}: give three sizes MIN,AVG,MAX, e.g. 256K,768K,4M")
    try:
        low, avg, high = (size_bytes(p) for p in parts)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    return low, avg, high


@click.command()
@click.option(
    "--insecure-password",
    is_flag=True,
    help=f"Accept a password shorter than {MIN_PASSWORD_LENGTH} characters.",
)
@click.option(
    "--chunker-params",
    metavar="MIN,AVG,MAX",
    callback=_chunker_params,
    help="Sizes of the content-defined chunks of files [default: 256K,768K,4M]; smaller "
    "chunks find more duplicates and cost more index.",
)
@click.option(
    "--block-size",
    metavar="SIZE",
    callback=parse_size,
    help="Block size of disk images, a power of 2 from 4K to 64M [default: 1M]; "
    "`backup --image --block-size` may still choose per image.",
)
@pass_app
def init(
    app: App,
    insecure_password: bool,
    chunker_params: tuple[int, int, int] | None,
    block_size: int | None,
) -> None:
    """Create a new, encrypted repository."""
    location = app.settings.repository
    key = create_repository(app, insecure_password, chunker_params, block_size)
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
