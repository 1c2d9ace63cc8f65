"""strongroom copy: copy points from another repository into this one (restic's `copy`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.commands.points import point_filter_options
from strongroom.cli.context import App, pass_app, source_password
from strongroom.cli.output import human_bytes, plural
from strongroom.errors import ExitCode, RepositoryError, StorageError, UsageError
from strongroom.model.names import printable

if TYPE_CHECKING:
    from strongroom.services.copy import CopiedPoint, CopySummary
    from strongroom.services.points import PointFilter
    from strongroom.services.session import Repository


@contextmanager
def _source(app: App, location: str, password: bytes) -> Iterator[Repository]:
    """The source repository, under a shared lock (backups into it go on; a prune
    waits); errors opening it say that it is the source. A source where no lock
    can be written (read-only storage or permissions) is read without one: a
    prune of it meanwhile can then fail the copy, never damage the target.
    `--limit-download` holds what is read from it (and from the target, which
    `App.repository` opens), `--limit-upload` what is written to the target."""
    from strongroom.services.session import LockMode, open_repository

    limit = app.settings.limit_download  # --limit-download holds the source's reads

    with ExitStack() as stack:
        try:
            try:
                repo = stack.enter_context(
                    open_repository(location, password, lock=LockMode.SHARED, limit_download=limit)
                )
            except (StorageError, PermissionError) as err:
                repo = stack.enter_context(
                    open_repository(location, password, lock=LockMode.NONE, limit_download=limit)
                )
                app.out.warn(
                    f"source repository {location}: no lock could be taken ({err}); "
                    "reading it without one"
                )
        except RepositoryError as err:
            raise type(err)(f"source repository {location}: {err}") from None
        repo.damage.listen(lambda message: app.out.notice(f"warning: source: {message} (skipped)"))
        yield repo


@click.command()
@click.argument("points", nargs=-1)
@click.option(
    "--from-repo",
    envvar=["STRONGROOM_FROM_REPO", "STRONGROOM_FROM_REPOSITORY"],
    metavar="LOCATION",
    help="The repository to copy from [env STRONGROOM_FROM_REPO or STRONGROOM_FROM_REPOSITORY].",
)
@click.option(
    "--from-password-file",
    envvar="STRONGROOM_FROM_PASSWORD_FILE",
    type=click.Path(),
    help="Read the source's password from this file [env STRONGROOM_FROM_PASSWORD_FILE].",
)
@click.option(
    "--from-password-command",
    envvar="STRONGROOM_FROM_PASSWORD_COMMAND",
    metavar="CMD",
    help="Run CMD for the source's password [env STRONGROOM_FROM_PASSWORD_COMMAND].",
)
@click.option(
    "--from-server",
    is_flag=True,
    help="Copy this machine's own points from its backup server (--server or the agent "
    "config) into the repository (--repo).",
)
@server_options
@point_filter_options
@click.option("--dry-run", "-n", is_flag=True, help="Only say which points would be copied.")
@pass_app
def copy(
    app: App,
    points: tuple[str, ...],
    from_repo: str | None,
    from_password_file: str | None,
    from_password_command: str | None,
    from_server: bool,
    servers: tuple[str, ...],
    agent_config: str | None,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Copy POINTS (ids, or `latest`), or every point matching --host/--tag/--path,
    from the repository --from-repo into this one.

    Data is re-chunked and stored under this repository's keys (deduplicated
    against what it holds); metadata is kept. Points already here are skipped, so
    running it again copies only what is new. Points of a kind it cannot copy
    (seed-based, continuous protection) are named and left: exit code 3.

    With --server or --agent-config the points go into the backup server as this
    enrolled machine's (the source's points of this machine's name, or of the one
    --host names); with --from-server this machine's points on the server come
    into the repository."""
    from strongroom.services.points import PointFilter

    if from_server and from_repo:
        raise UsageError("--from-server and --from-repo: give one source")
    if not from_repo and not from_server:
        raise UsageError("give the repository to copy from: --from-repo LOCATION")
    if from_server and hosts:
        raise UsageError("copy --from-server: no --host (the points are this machine's)")
    out = app.out
    flt = PointFilter(list(hosts), list(tags), list(paths))

    def said(p: CopiedPoint) -> None:
        what = f"{p.source_id[:8]} ({printable(p.kind)}, {printable(p.host)}, {p.time[:19]})"
        if p.status == "refused":
            out.warn(f"point {what} not copied: {p.reason}")
        elif not out.json:
            arrow = f" -> {p.target_id[:8]}" if p.target_id else ""
            verb = {"skipped": "already present", "would-copy": "would copy"}.get(
                p.status, "copied"
            )
            out.info(f"{verb} {what}{arrow}")

    copying = _Copying(list(points), flt, dry_run, said)
    if from_server:
        summary = _from_server(app, servers, agent_config, copying)
    else:
        assert from_repo is not None
        password = source_password(from_password_file, from_password_command)
        if through_server(servers, agent_config):
            summary = _to_server(app, servers, agent_config, from_repo, password, copying)
        else:
            summary = _local(app, from_repo, password, copying)
    doc = summary.as_dict()
    copied = summary.count("would-copy" if dry_run else "copied")
    verb = "would copy" if dry_run else "copied"
    lines = [
        f"{verb} {plural(copied, 'point')}, {summary.count('skipped')} already present"
        + (f", {summary.count('refused')} not copied" if summary.count("refused") else ""),
    ]
    if not dry_run:
        lines.append(
            f"read {human_bytes(summary.bytes_read)} from the source, added "
            f"{human_bytes(summary.data_added)} ({human_bytes(summary.data_added_stored)} "
            f"stored) in {summary.seconds:.1f} s"
        )
    out.summary(doc, lines)
    if summary.count("refused"):
        raise SystemExit(ExitCode.PARTIAL)


@dataclass(frozen=True)
class _Copying:
    refs: list[str]
    flt: PointFilter
    dry_run: bool
    said: Callable[[CopiedPoint], None]


def _local(app: App, from_repo: str, password: bytes, job: _Copying) -> CopySummary:
    from strongroom.services.copy import copy_points
    from strongroom.services.session import LockMode

    with (
        app.repository(LockMode.SHARED) as dst,
        _source(app, from_repo, password) as src,
        app.out.progress("copy") as progress,
    ):
        return copy_points(src, dst, job.refs, job.flt, dry_run=job.dry_run,
                           progress=progress, on_point=job.said)  # fmt: skip


def _to_server(
    app: App,
    servers: tuple[str, ...],
    agent_config: str | None,
    from_repo: str,
    password: bytes,
    job: _Copying,
) -> CopySummary:
    """The source's points into the server, as this enrolled machine's."""
    from strongroom.services.agent_backup import open_agent
    from strongroom.services.agent_copy import copy_to_server

    with (
        open_agent(agent_config, list(servers)) as (config, store),
        _source(app, from_repo, password) as src,
        app.out.progress("copy") as progress,
    ):
        summary = copy_to_server(
            src, store, config.machine, job.refs, job.flt,
            dry_run=job.dry_run, progress=progress, on_point=job.said,
        )  # fmt: skip
        traffic = store.traffic
    if not job.dry_run:
        app.out.info(
            f"through the server: {traffic.asked} chunk ids asked, "
            f"{traffic.missing} missing, {human_bytes(traffic.bytes_sent)} sent"
        )
    return summary


def _from_server(
    app: App, servers: tuple[str, ...], agent_config: str | None, job: _Copying
) -> CopySummary:
    """This machine's points on the server into the repository."""
    from strongroom.services.agent_backup import open_agent
    from strongroom.services.agent_copy import copy_from_server
    from strongroom.services.session import LockMode

    with (
        open_agent(agent_config, list(servers)) as (_config, store),
        app.repository(LockMode.SHARED) as dst,
        app.out.progress("copy") as progress,
    ):
        return copy_from_server(store, dst, job.refs, job.flt, dry_run=job.dry_run,
                                progress=progress, on_point=job.said)  # fmt: skip
