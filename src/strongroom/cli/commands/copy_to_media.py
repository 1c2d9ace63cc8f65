"""strongroom copy-to-media: write points to the media of a pool."""

from __future__ import annotations

import click

from strongroom.cli.commands.points import chosen_point, point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes, plural
from strongroom.cli.units import parse_duration
from strongroom.services.copy_to_media import copy_to_media as copy_points
from strongroom.services.media_pools import library_name, open_catalog, open_changer


@click.command("copy-to-media")
@click.argument("points", nargs=-1, required=True, metavar="POINT...")
@click.option("--pool", "pool_name", required=True, help="The pool whose media are written.")
@click.option("--library", help="The library (default: the one the pool's media are in).")
@click.option("--again", is_flag=True, help="Write points already on media of the pool again.")
@click.option(
    "--wait",
    callback=parse_duration,
    help="With no writable medium: wait this long for an operator to label one (e.g. 30m).",
)
@point_filter_options
@pass_app
def copy_to_media(
    app: App,
    points: tuple[str, ...],
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    pool_name: str,
    library: str | None,
    again: bool,
    wait: float | None,
) -> None:
    """Write POINT... (their packs, manifests and trees) to media of a pool,
    spanning cartridges as they fill."""
    with open_catalog(app.settings) as catalog:
        name = library_name(app.settings, catalog, library, pool_name)
        changer = open_changer(app.settings, name)
        with app.repository() as repo:
            ids = [chosen_point(app, repo, p, hosts, tags, paths).id for p in points]
            with app.out.progress("copying to media") as progress:
                result = copy_points(
                    catalog,
                    changer,
                    repo,
                    ids,
                    pool_name,
                    again=again,
                    progress=progress,
                    wait=wait or 0.0,
                )
    lines = [f"{p[:8]}: already on media of pool {pool_name} (skipped)" for p in result.skipped]
    for c in result.cartridges:
        lines.append(
            f"{c.barcode}: session {c.session}, {plural(c.packs, 'pack')}, "
            f"{human_bytes(c.bytes_written)}, now {c.state}" + (" (recycled)" if c.recycled else "")
        )
    if result.written:
        lines.append(
            f"copied {plural(len(result.written), 'point')} to pool {pool_name} "
            f"({human_bytes(result.bytes_written)} on {len(result.cartridges)} cartridges)"
        )
    for pack in result.damaged:
        app.out.warn(f"pack {pack[:16]} is damaged in the repository: not written")
    app.out.summary(result.as_dict(), lines)
