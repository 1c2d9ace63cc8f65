"""`backup --stdin [--stdin-filename NAME]`: a decorator that owns its options,
so the backup command's signature stays as it is (services/stdin_backup.py)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def stdin_options(func: F) -> F:
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        from_stdin = kwargs.pop("stdin")
        name = kwargs.pop("stdin_filename")
        if not from_stdin:
            if name is not None:
                raise click.UsageError("--stdin-filename goes with --stdin")
            return func(*args, **kwargs)
        others = [o for o in ("paths", "image", "vms", "files_from") if kwargs.get(o)]
        others += [o for o in ("files_from_verbatim", "files_from_raw") if kwargs.get(o)]
        if others or kwargs.get("dry_run") or kwargs.get("parent") or kwargs.get("force"):
            raise click.UsageError(
                "--stdin backs up standard input alone: no paths, --image, --vm, "
                "--dry-run, --parent or --force"
            )
        server = (kwargs["servers"], kwargs["agent_config"])
        if (server[0] or server[1] is not None) and kwargs["host"]:
            raise click.UsageError("through a server: no --host (the point is this machine's)")
        _backup_stdin(
            args[0], "stdin" if name is None else name, list(kwargs["tag"]), kwargs["host"], server
        )
        return None

    run = click.option(
        "--stdin-filename",
        default=None,
        metavar="NAME",
        help="With --stdin: the file's name in the point [default: stdin].",
    )(run)
    run = click.option(
        "--stdin",
        is_flag=True,
        help="Back up what is read from standard input as one file "
        "(pg_dump db | strongroom backup --stdin --stdin-filename db.sql).",
    )(run)
    return run  # type: ignore[return-value]


def _backup_stdin(
    app: Any, name: str, tags: list[str], host: str, server: tuple[tuple[str, ...], str | None]
) -> None:
    """Into the repository, or (`server`: `--server` URLs, `--agent-config`
    given) through the backup server as the enrolled machine."""
    from strongroom.cli.output import human_bytes
    from strongroom.services.stdin_backup import StdinBackupRequest, backup_stdin, stdin_path

    stdin_path(name)  # a bad name is refused before the repository is opened
    if sys.stdin.isatty():
        raise click.UsageError("--stdin reads a pipe or a file, not the terminal")
    request = StdinBackupRequest(name, sys.stdin.buffer, host=host, tags=tags)
    out = app.out
    if server[0] or server[1] is not None:
        from strongroom.services.agent_backup import open_agent

        with (
            open_agent(server[1], list(server[0])) as (config, store),
            out.progress("backup") as progress,
        ):
            request.host = config.machine
            point, summary = backup_stdin(store, request, progress)
    else:
        from strongroom.services.session import LockMode

        with app.repository(LockMode.SHARED) as repo, out.progress("backup") as progress:
            point, summary = backup_stdin(repo, request, progress)
    size = int(summary["total_bytes"])  # type: ignore[call-overload]
    added = int(summary["data_added"])  # type: ignore[call-overload]
    out.summary(
        {"point_id": point.id, **summary},
        [
            f"stored /{name} from standard input: {human_bytes(size)}, {human_bytes(added)} new",
            f"point {point.short_id} saved",
        ],
    )
