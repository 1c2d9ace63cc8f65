"""strongroom snapshots (alias: points): list recovery points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.model.kinds import IMAGE_KINDS
from strongroom.model.names import printable
from strongroom.services.points import PointFilter, list_points
from strongroom.services.session import LockMode

F = TypeVar("F", bound=Callable[..., Any])


def point_filter_options(f: F) -> F:
    f = click.option("--host", "hosts", multiple=True, help="Only points of this host.")(f)
    f = click.option("--tag", "tags", multiple=True, help="Only points with this tag.")(f)
    f = click.option("--path", "paths", multiple=True, help="Only points of exactly these paths.")(
        f
    )
    return f


@click.command()
@point_filter_options
@pass_app
def snapshots(
    app: App, hosts: tuple[str, ...], tags: tuple[str, ...], paths: tuple[str, ...]
) -> None:
    """List recovery points."""
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
    app.out.table(
        ["ID", "Time", "Host", "Tags", "Kind", "Size", "Changed", "Stored", "Tracker", "Paths"],
        rows,
    )
    app.out.info(f"{len(points)} points")
