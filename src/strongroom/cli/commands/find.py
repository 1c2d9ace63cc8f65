"""strongroom find: which points hold files matching a pattern."""

from __future__ import annotations

import stat as statmod
from datetime import datetime

import click

from strongroom.cli.commands.agent import server_options
from strongroom.cli.commands.browse import _TYPE_CHAR, _node_doc, open_points
from strongroom.cli.commands.points import point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import plural
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.services.find import FindRequest, find_files, search_points
from strongroom.services.points import PointFilter


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """`2026-12-07`, `2026-12-07 10:00`, `2026-12-07T10:00:00+01:00` (local time if no zone)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date or time (examples: 2026-12-07, '2026-12-07 10:00')"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


@click.command()
@click.argument("patterns", nargs=-1, required=True)
@click.option(
    "--point",
    "points",
    multiple=True,
    metavar="ID",
    help="Search only this point (repeatable; 'latest' with --host/--path/--tag).",
)
@point_filter_options
@click.option("--oldest", callback=_moment, help="Only entries modified at or after this time.")
@click.option("--newest", callback=_moment, help="Only entries modified at or before this time.")
@click.option("--ignore-case", "-i", is_flag=True, help="Match regardless of case.")
@click.option("--long", "-l", "long_", is_flag=True, help="Show modes, sizes and times.")
@click.option(
    "--images",
    is_flag=True,
    help="Also search the ext2/3/4 or FAT file system inside each image point (reads its "
    "metadata blocks from the repository, for every point).",
)
@server_options
@pass_app
def find(
    app: App,
    patterns: tuple[str, ...],
    points: tuple[str, ...],
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    oldest: datetime | None,
    newest: datetime | None,
    ignore_case: bool,
    long_: bool,
    images: bool,
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """Find files in points by name (`*.conf`) or path (`/etc/**/*.conf`).

    A pattern without a slash matches an entry's name, one with a slash its whole
    path (`*` stays within a folder, `**` crosses folders), as `--exclude` does.
    Entries matching any pattern are listed, point by point, oldest point first.
    Image points are searched with --images; VM points are not searched."""
    request = FindRequest(
        list(patterns),
        PointFilter(list(hosts), list(tags), list(paths)),
        list(points),
        ignore_case,
        oldest,
        newest,
        images,
    )
    out = app.out
    results: list[dict[str, object]] = []
    total = 0
    not_searched: list[str] = []

    def skipped(point: RecoveryPoint, why: str) -> None:
        if images:  # asked for: each one says why (on stderr: stdout keeps one JSON document)
            out.notice(f"warning: point {point.short_id} not searched: {why}")
        else:
            not_searched.append(point.short_id)

    with open_points(app, servers, agent_config) as reader:
        if reader.repo is not None:
            hits = find_files(reader.repo, request, skipped)
        else:
            chosen = reader.own_points(request.points, request.filter)
            hits = search_points(reader.store, chosen, request, skipped)
        for found in hits:
            p = found.point
            total += len(found.matches)
            if out.json:
                results.append(
                    {
                        "point": p.id,
                        "time": p.time.isoformat(),
                        "host": p.host,
                        "paths": p.paths,
                        "hits": len(found.matches),
                        **({"filesystem": found.filesystem} if found.filesystem else {}),
                        "matches": [_node_doc(path, node, None) for path, node in found.matches],
                    }
                )
                continue
            inside = f" (in its {found.filesystem} file system)" if found.filesystem else ""
            out.info(
                f"found in point {p.short_id} of host {printable(p.host)}, "
                f"{printable(':'.join(p.paths))}, {p.time.astimezone():%Y-%m-%d %H:%M:%S}{inside}"
            )
            for path, node in found.matches:
                if long_:
                    mode = _TYPE_CHAR.get(node.type, "?") + statmod.filemode(node.mode)[1:]
                    when = datetime.fromtimestamp(node.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
                    out.info(f"  {mode} {node.size:>12} {when} {printable(path)}")
                else:
                    out.info(f"  {printable(path)}")
    if out.json:
        out.document(results)
    else:
        out.notice(plural(total, "match", "matches"))
        if not_searched:
            out.notice(
                f"{plural(len(not_searched), 'image point')} not searched "
                f"({', '.join(not_searched[:5])}{', ...' if len(not_searched) > 5 else ''}); "
                "--images searches the file systems inside them"
            )
