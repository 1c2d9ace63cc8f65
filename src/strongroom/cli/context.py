"""Per-invocation state: settings, output, password; opening the repository once."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from strongroom.cli.output import Output
from strongroom.errors import UsageError

if TYPE_CHECKING:  # the repository code loads when a command opens one, not for --version
    from strongroom.config import Settings
    from strongroom.services.session import LockMode, Repository


@dataclass
class App:
    settings: Settings
    out: Output
    password_file: str | None = None  # --password-file
    password_command: str | None = None  # --password-command
    _password: bytes | None = field(default=None, repr=False)  # once read, for this command

    def has_password_source(self) -> bool:
        """True when a password can be had without asking anyone."""
        settings = self.settings
        return bool(
            os.environ.get("STRONGROOM_PASSWORD")
            or self.password_file
            or self.password_command
            or settings.password_file
            or settings.password_command
        )

    def password(self, confirm: bool = False, prompt: str = "repository password") -> bytes:
        """From the command line's file or command, STRONGROOM_PASSWORD, the
        settings' file or command, or a prompt (terminal only); docs/cli.md.

        Asked for once per command: a first backup that creates the default
        repository and then opens it asks twice (new, confirm), not three times,
        and a password command runs once. Never logged, never echoed.
        """
        if self._password is None:
            self._password = self._read_password(confirm, prompt)
        return self._password

    def _read_password(self, confirm: bool, prompt: str) -> bytes:
        if self.password_file and self.password_command:
            raise UsageError("--password-file and --password-command exclude each other")
        if self.password_file:
            return _password_from_file(self.password_file)
        if self.password_command:
            return password_from_command(self.password_command)
        env = os.environ.get("STRONGROOM_PASSWORD")
        if env:
            return env.encode()
        settings = self.settings
        if settings.password_file and settings.password_command:
            raise UsageError(
                "both a password file and a password command are set "
                f"({settings.source.get('password_file', 'config')}, "
                f"{settings.source.get('password_command', 'config')}): keep one"
            )
        if settings.password_file:
            return _password_from_file(settings.password_file)
        if settings.password_command:
            return password_from_command(settings.password_command)
        if not sys.stdin.isatty():
            raise UsageError(
                "no password given: set STRONGROOM_PASSWORD, STRONGROOM_PASSWORD_FILE or "
                "STRONGROOM_PASSWORD_COMMAND, or use --password-file or --password-command"
            )
        value: str = click.prompt(
            f"Enter {prompt}", hide_input=True, default="", show_default=False, err=True
        )
        if not value:
            raise UsageError("an empty password is not allowed: anyone could open the repository")
        if confirm:
            again: str = click.prompt(
                "Repeat it to confirm", hide_input=True, default="", show_default=False, err=True
            )
            if again != value:
                raise UsageError("the two passwords typed differ: nothing was created")
        return value.encode()

    @contextmanager
    def repository(
        self, lock: LockMode | None = None, *, show_damage: bool = True
    ) -> Iterator[Repository]:
        """Open for one command (``lock`` None: shared); damaged or foreign objects the
        command meets (and skips) are shown once each on stderr, unless the command
        reports them itself."""
        from strongroom.services.session import LockMode, open_repository

        mode = LockMode.SHARED if lock is None else lock
        settings = self.settings
        with open_repository(
            settings.repository,
            self.password(),
            lock=mode,
            limit_upload=settings.limit_upload,  # --limit-upload, --limit-download
            limit_download=settings.limit_download,
        ) as repo:
            if show_damage:
                repo.damage.listen(lambda message: self.out.notice(f"warning: {message} (skipped)"))
            yield repo


pass_app = click.make_pass_decorator(App)


def _password_from_file(path: str) -> bytes:
    """The first line of the file, without its line end; an empty one is refused."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            first = f.read().splitlines()
    except OSError as err:
        raise UsageError(f"cannot read password file {path}: {err.strerror}") from None
    if not first or not first[0]:
        raise UsageError(f"password file {path} is empty")
    return first[0]


def password_from_command(command: str) -> bytes:
    """Run the user's password command (as restic and borg do: no shell) and take
    the first line of what it prints.

    Its standard error and the terminal stay the user's (gpg's pinentry, `pass`
    prompting); its output is never shown, even when it fails. strongroom's own
    variables are not passed on; the user's credentials are (it is their command)."""
    import shlex
    import subprocess

    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise UsageError(f"password command: {err}") from None
    if not argv:
        raise UsageError("the password command is empty")
    from strongroom.config import child_environment

    try:
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            env=child_environment(user_credentials=True),
            check=False,
        )
    except OSError as err:
        raise UsageError(f"password command {argv[0]}: {err.strerror}") from None
    if done.returncode != 0:
        raise UsageError(f"password command {argv[0]} failed (exit {done.returncode})")
    lines = done.stdout.splitlines()
    if not lines or not lines[0]:
        raise UsageError(f"password command {argv[0]} printed no password")
    return lines[0]


def source_password(file: str | None, command: str | None) -> bytes:
    """The password of a second repository (`copy --from-repo`): from its own
    file or command, STRONGROOM_FROM_PASSWORD, or a prompt (terminal only); the
    main repository's password sources are never taken for it."""
    if file and command:
        raise UsageError("--from-password-file and --from-password-command exclude each other")
    if file:
        return _password_from_file(file)
    if command:
        return password_from_command(command)
    env = os.environ.get("STRONGROOM_FROM_PASSWORD")
    if env:
        return env.encode()
    if not sys.stdin.isatty():
        raise UsageError(
            "no password given for the source repository: set STRONGROOM_FROM_PASSWORD, "
            "STRONGROOM_FROM_PASSWORD_FILE or STRONGROOM_FROM_PASSWORD_COMMAND, or use "
            "--from-password-file or --from-password-command"
        )
    value: str = click.prompt(
        "Enter password of the source repository",
        hide_input=True,
        default="",
        show_default=False,
        err=True,
    )
    if not value:
        raise UsageError("an empty password opens no repository")
    return value.encode()
