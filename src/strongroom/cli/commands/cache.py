"""strongroom cache: the local caches of remote repositories, and their cleanup."""

from __future__ import annotations

from datetime import datetime

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes, plural
from strongroom.cli.units import parse_duration
from strongroom.services.caches import clean_caches, list_caches


@click.command()
@click.option("--cleanup", is_flag=True, help="Remove caches not used for --max-unused.")
@click.option(
    "--max-unused",
    default="30d",
    show_default=True,
    callback=parse_duration,
    metavar="DURATION",
    help="With --cleanup: how long a cache may go unused (90s, 12h, 30d).",
)
@pass_app
def cache(app: App, cleanup: bool, max_unused: float) -> None:
    """List the local caches (index files, points and trees of remote repositories
    under $XDG_CACHE_HOME/strongroom), or remove old ones with --cleanup."""
    out = app.out
    if cleanup:
        removed = clean_caches(max_unused)
        if out.json:
            out.document({"removed": [c.as_dict() for c in removed]})
            return
        for c in removed:
            out.info(f"removed {c.path} ({human_bytes(c.bytes)})")
        out.notice(f"removed {plural(len(removed), 'cache')}")
        return
    caches = list_caches()
    if out.json:
        out.document([c.as_dict() for c in caches])
        return
    for c in caches:
        used = datetime.fromtimestamp(c.last_used).strftime("%Y-%m-%d %H:%M")
        out.info(
            f"{c.kind:<10} {c.repository_id:<32} {human_bytes(c.bytes):>11} "
            f"{c.entries:>7} entries  last used {used}"
        )
    out.notice(plural(len(caches), "cache"))
