"""`--priority`, `--limit-read`, `--limit-upload`: how a job stays out of the way.

`impact_options(kind_of)` adds the three options to a command (below
`@pass_app`, so the wrapped function receives the App first) and consumes
them: the command's own signature does not change. Before the command runs,
its values override the settings (file < environment < command line), and
the job's priority (services/impact.py: by kind, `kind_of` tells the kind
from the command's arguments) is applied to this whole process, so every
worker thread and process started later inherits it. The limits are read
from `app.settings` where the repository is opened (cli/context.py:
uploads) and where sources are read (image and VM backups: reads).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from strongroom.cli.units import parse_rate
from strongroom.priority import PRIORITY_NAMES, parse_priority

F = TypeVar("F", bound=Callable[..., Any])
KindOf = Callable[[dict[str, Any]], str]


def impact_options(kind_of: KindOf, reads: bool = True) -> Callable[[F], F]:
    """The options (the module docstring); `reads`: whether `--limit-read` is offered."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            app = args[0]
            settings = app.settings
            chosen = kwargs.pop("priority")
            limit_read = kwargs.pop("limit_read", None)
            limit_upload = kwargs.pop("limit_upload")
            priority = None if chosen is None else parse_priority(chosen)
            settings.override("priority", priority, "--priority")
            settings.override("limit_read", limit_read, "--limit-read")
            settings.override("limit_upload", limit_upload, "--limit-upload")
            kind = kind_of(kwargs)
            if limit_read is not None and kind not in ("image", "vm"):
                raise click.UsageError("--limit-read applies to --image and --vm backups")
            from strongroom.services.impact import start_job

            for warning in start_job(kind, settings.priority):  # type: ignore[arg-type]
                app.out.warn(warning)
            return func(*args, **kwargs)

        options = [
            click.option(
                "--priority",
                type=click.Choice(PRIORITY_NAMES, case_sensitive=False),
                default=None,
                help="CPU and I/O priority of the job: idle (SCHED_IDLE, I/O class idle), "
                "low (nice 10, best-effort 7) or normal [default: idle for --vm and "
                "protect, normal otherwise; config priority, env STRONGROOM_PRIORITY].",
            ),
            click.option(
                "--limit-upload",
                metavar="RATE",
                callback=parse_rate,
                help="At most RATE bytes per second written to the repository's storage "
                "(50M = 50 MiB/s; config limit_upload, env STRONGROOM_LIMIT_UPLOAD).",
            ),
        ]
        if reads:
            options.append(
                click.option(
                    "--limit-read",
                    metavar="RATE",
                    callback=parse_rate,
                    help="With --image or --vm: read the disks at most at RATE bytes per "
                    "second (50M = 50 MiB/s; config limit_read, env STRONGROOM_LIMIT_READ).",
                )
            )
        wrapped: Any = run
        for option in options:
            wrapped = option(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


def backup_kind(kwargs: dict[str, Any]) -> str:
    """`backup`'s job kind: vm (--vm), image (--image) or files."""
    return "vm" if kwargs.get("vms") else "image" if kwargs.get("image") else "files"


def protect_kind(kwargs: dict[str, Any]) -> str:
    return "protect"
