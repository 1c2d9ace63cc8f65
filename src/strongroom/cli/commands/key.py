"""strongroom key add/list/remove/passwd: manage the passwords of a repository."""

from __future__ import annotations

import os
import sys

import click

from strongroom.cli.context import App, pass_app
from strongroom.errors import UsageError
from strongroom.model.names import printable
from strongroom.services.session import LockMode, password_warning


def _new_password(app: App, new_password_file: str | None) -> bytes:
    password = _read_new_password(app, new_password_file)
    weak = password_warning(password)
    if weak:
        app.out.notice(f"warning: {weak}")
    return password


def _read_new_password(app: App, new_password_file: str | None) -> bytes:
    if new_password_file:
        with open(new_password_file, "rb") as f:
            lines = f.read().splitlines()
        if not lines or not lines[0]:
            raise click.UsageError("the new password file is empty")
        return lines[0]
    env = os.environ.get("STRONGROOM_NEW_PASSWORD")
    if env:
        return env.encode()
    if not sys.stdin.isatty():
        raise UsageError(
            "no new password given: use --new-password-file or set STRONGROOM_NEW_PASSWORD"
        )
    value: str = click.prompt(
        "Enter new password", hide_input=True, confirmation_prompt=True, err=True
    )
    return value.encode()


@click.group()
def key() -> None:
    """Manage the passwords (key files) that open the repository."""


@key.command("list")
@pass_app
def key_list(app: App) -> None:
    """List key files."""
    with app.repository(LockMode.NONE) as repo:
        keys = repo.list_keys()
    if app.out.json:
        app.out.document(keys)
        return
    rows = [
        (
            "*" if k["current"] else "",
            str(k["id"])[:8],
            printable(str(k["user"])),  # key files are plaintext any key holder writes
            printable(str(k["host"])),
            "damaged" if k["damaged"] else printable(str(k["created"])),
        )
        for k in keys
    ]
    app.out.table(["", "ID", "User", "Host", "Created"], rows)


@key.command("add")
@click.option(
    "--new-password-file", type=click.Path(exists=True), help="Read the new password from a file."
)
@pass_app
def key_add(app: App, new_password_file: str | None) -> None:
    """Add a password."""
    with app.repository(LockMode.NONE) as repo:
        name = repo.add_key(_new_password(app, new_password_file))
    app.out.document({"added": name[5:]}) if app.out.json else app.out.info(
        f"added key {name[5:13]}"
    )


@key.command("remove")
@click.argument("key_id")
@pass_app
def key_remove(app: App, key_id: str) -> None:
    """Remove a password (not the one in use)."""
    with app.repository(LockMode.NONE) as repo:
        name = repo.remove_key(key_id)
    app.out.document({"removed": name[5:]}) if app.out.json else app.out.info(
        f"removed key {name[5:13]}"
    )


@key.command("passwd")
@click.option(
    "--new-password-file", type=click.Path(exists=True), help="Read the new password from a file."
)
@pass_app
def key_passwd(app: App, new_password_file: str | None) -> None:
    """Change the password in use."""
    with app.repository(LockMode.NONE) as repo:
        name = repo.change_password(_new_password(app, new_password_file))
    app.out.document({"key": name[5:]}) if app.out.json else app.out.info(
        f"password changed (key {name[5:13]})"
    )
