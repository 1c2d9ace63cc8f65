"""strongroom tag: add, remove or set the tags of points."""

from __future__ import annotations

import click

from strongroom.cli.commands.points import point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import plural
from strongroom.services.points import PointFilter
from strongroom.services.session import LockMode
from strongroom.services.tags import retag_points


@click.command()
@click.argument("points", nargs=-1)
@click.option("--add", "add", multiple=True, metavar="TAG", help="Add this tag (repeatable).")
@click.option("--remove", multiple=True, metavar="TAG", help="Remove this tag (repeatable).")
@click.option(
    "--set",
    "replace",
    multiple=True,
    metavar="TAG",
    help="Replace all tags with these (repeatable; --set '' clears them).",
)
@point_filter_options
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would change.")
@pass_app
def tag(
    app: App,
    points: tuple[str, ...],
    add: tuple[str, ...],
    remove: tuple[str, ...],
    replace: tuple[str, ...],
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Add, remove or set the tags of POINTS (ids, or `latest`), or of every point
    matching --host/--tag/--path. A retagged point gets a new id (its object is
    named by its content), as restic's `tag` does; the old id is recorded in it."""
    wanted = None if not replace else [t for t in replace if t]
    with app.repository(LockMode.SHARED) as repo:
        done = retag_points(
            repo,
            list(points),
            PointFilter(list(hosts), list(tags), list(paths)),
            list(add),
            list(remove),
            wanted,
            dry_run,
        )
    changed = [d for d in done if d.new_id is not None]
    if app.out.json:
        app.out.document(
            {
                "changed": [
                    {"old_id": d.old_id, "new_id": d.new_id or None, "tags": d.tags}
                    for d in changed
                ],
                "unchanged": [d.old_id for d in done if d.new_id is None],
                "dry_run": dry_run,
            }
        )
        return
    verb = "would retag" if dry_run else "retagged"
    for d in changed:
        arrow = "" if dry_run else f" -> {d.new_id[:8] if d.new_id else ''}"
        app.out.info(f"{verb} {d.old_id[:8]}{arrow}: {', '.join(d.tags) or '(no tags)'}")
    app.out.notice(f"{verb} {plural(len(changed), 'point')}, {len(done) - len(changed)} unchanged")
