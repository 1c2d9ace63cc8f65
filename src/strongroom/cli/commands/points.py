"""strongroom snapshots (alias: points): list recovery points."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes, plural
from strongroom.model.kinds import IMAGE_KINDS
from strongroom.model.names import printable
from strongroom.services.points import PointFilter, list_points
from strongroom.services.session import LockMode

if TYPE_CHECKING:
    from strongroom.model.point import RecoveryPoint
    from strongroom.services.session import Repository
from strongroom.services.timeline import timeline

F = TypeVar("F", bound=Callable[..., Any])


def chosen_point(
    app: App,
    repo: Repository,
    ref: str,
    hosts: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    paths: tuple[str, ...] = (),
) -> RecoveryPoint:
    """The point `ref` names: an id prefix, or `latest` among the points of
    --host/--tag/--path; for `latest` the command says which point it took."""
    from strongroom.services.points import find_point

    point = find_point(repo, ref, PointFilter(list(hosts), list(tags), list(paths)))
    if ref == "latest":
        app.out.notice(f"using {describe_point(point)}")
    return point


def describe_point(point: RecoveryPoint) -> str:
    """`point 3f2a9c01 of host web, /srv, 2026-12-07 10:00`."""
    where = ", ".join(printable(p) for p in point.paths) or "(no paths)"
    when = point.time.astimezone().strftime("%Y-%m-%d %H:%M")
    return f"point {point.short_id} of host {printable(point.host)}, {where}, {when}"


def point_filter_options(f: F) -> F:
    f = click.option("--host", "hosts", multiple=True, help="Only points of this host.")(f)
    f = click.option("--tag", "tags", multiple=True, help="Only points with this tag.")(f)
    f = click.option("--path", "paths", multiple=True, help="Only points of exactly these paths.")(
        f
    )
    return f


@click.command()
@point_filter_options
@click.option("--source", metavar="NAME", help="Only this protected source's points: its timeline.")
@server_options
@pass_app
def snapshots(
    app: App,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    source: str | None,
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """List recovery points (through a server: this machine's own)."""
    if source is not None:
        if hosts or tags or paths:
            raise click.UsageError("--source lists one source's timeline: no --host/--tag/--path")
        _timeline(app, source)
        return
    if through_server(servers, agent_config):
        from strongroom.services.agent_backup import agent_points, open_agent

        if hosts or source:
            raise click.UsageError("through a server: this machine's points; no --host/--source")
        with open_agent(agent_config, list(servers)) as (_config, store):
            flt = PointFilter([], list(tags), list(paths))
            points = [p for p in agent_points(store) if flt.matches(p)]
    else:
        with app.repository(LockMode.NONE) as repo:
            points = list_points(repo, PointFilter(list(hosts), list(tags), list(paths)))
    if app.out.json:
        app.out.document([{"id": p.id, **p.to_doc()} for p in points])
        return
    rows = [
        (
            p.short_id,
            p.time.strftime("%Y-%m-%d %H:%M:%S"),
            printable(p.host),
            ",".join(printable(t) for t in p.tags),
            p.kind,
            human_bytes(int(p.summary.get("size" if p.kind in IMAGE_KINDS else "total_bytes", 0))),
            human_bytes(int(p.summary["bytes_changed"])) if "bytes_changed" in p.summary else "",
            human_bytes(int(p.summary.get("data_added_stored", p.summary.get("data_added", 0)))),
            str(p.summary.get("tracker", "")),
            "\n".join(printable(path) for path in p.paths),
        )
        for p in points
    ]
    headers = ["ID", "Time", "Host", "Tags", "Kind", "Size", "Changed", "Stored", "Tracker"]
    headers.append("Paths")
    # Changed (image points) and Tracker (protected sources) only when some point has them.
    shown = [i for i, h in enumerate(headers) if h not in _OPTIONAL or any(r[i] for r in rows)]
    app.out.table([headers[i] for i in shown], [[r[i] for i in shown] for r in rows])
    app.out.info(plural(len(points), "point"))


_OPTIONAL = ("Changed", "Tracker")


def _timeline(app: App, source: str) -> None:
    with app.repository(LockMode.NONE) as repo:
        entries = timeline(repo, source)
    if app.out.json:
        app.out.document([e.as_dict() for e in entries])
        return
    rows = [
        (
            e.point.short_id,
            e.point.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            e.point.kind,
            e.consistency,
            printable(e.reason),
            human_bytes(int(e.point.summary["bytes_changed"]))
            if "bytes_changed" in e.point.summary
            else "",
        )
        for e in entries
    ]
    app.out.table(["ID", "Time", "Kind", "Consistency", "Reason", "Changed"], rows)
    app.out.info(f"{plural(len(entries), 'point')} of {printable(source)}")
