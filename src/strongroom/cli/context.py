"""Per-invocation state: settings, output, password; opening the repository once."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    password_file: str | None = None

    def password(self, confirm: bool = False, prompt: str = "repository password") -> bytes:
        """From STRONGROOM_PASSWORD, a password file, or a prompt (terminal only).

        Never logged, never echoed.
        """
        env = os.environ.get("STRONGROOM_PASSWORD")
        if env and not self.password_file:  # the command line beats the environment
            return env.encode()
        path = self.password_file or self.settings.password_file
        if path:
            try:
                with open(os.path.expanduser(path), "rb") as f:
                    first = f.read().splitlines()
            except OSError as err:
                raise UsageError(f"cannot read password file {path}: {err.strerror}") from None
            if not first or not first[0]:
                raise UsageError(f"password file {path} is empty")
            return first[0]
        if not sys.stdin.isatty():
            raise UsageError(
                "no password given: set STRONGROOM_PASSWORD or STRONGROOM_PASSWORD_FILE, "
                "or use --password-file"
            )
        value: str = click.prompt(
            f"Enter {prompt}", hide_input=True, confirmation_prompt=confirm, err=True
        )
        if not value:
            raise UsageError("an empty password is not allowed")
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
        with open_repository(self.settings.repository, self.password(), lock=mode) as repo:
            if show_damage:
                repo.damage.listen(lambda message: self.out.notice(f"warning: {message} (skipped)"))
            if self.settings.limit_upload is not None:  # --limit-upload (cli/impact.py)
                from strongroom.services.impact import limit_uploads

                limit_uploads(repo, self.settings.limit_upload)
            yield repo


pass_app = click.make_pass_decorator(App)
