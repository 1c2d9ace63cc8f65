"""strongroom media: the cartridges of the libraries."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.errors import MediaError, UsageError
from strongroom.services.media_pools import (
    label_media,
    library_name,
    open_catalog,
    open_changer,
)


@click.group()
def media() -> None:
    """Cartridges: labelling (and, with the inventory, listing)."""


@media.command("label")
@click.argument("barcodes", nargs=-1)
@click.option("--pool", "pool_name", required=True, help="The pool the media join.")
@click.option("--library", "library", help="The library holding them (default: the only one).")
@click.option(
    "--all-new", is_flag=True, help="Every cartridge the catalog does not know or knows as blank."
)
@click.option("--force", is_flag=True, help="Erase a cartridge that carries data (its label too).")
@pass_app
def label(
    app: App,
    barcodes: tuple[str, ...],
    pool_name: str,
    library: str | None,
    all_new: bool,
    force: bool,
) -> None:
    """Write a strongroom label on the cartridges BARCODE... for a pool."""
    if not barcodes and not all_new:
        raise UsageError("name the cartridges (BARCODE...) or use --all-new")
    with open_catalog(app.settings) as catalog:
        name = library_name(app.settings, catalog, library, pool_name)
        changer = open_changer(app.settings, name)
        with app.repository() as repo:
            results = label_media(
                catalog, changer, repo, pool_name, barcodes, all_new=all_new, force=force
            )
    refused = [r for r in results if not r.labelled]
    lines = []
    for r in results:
        if r.labelled:
            lines.append(f"{r.barcode}: labelled for pool {pool_name} (sequence {r.sequence})")
        else:
            app.out.notice(f"{r.barcode}: not labelled: {r.reason}")
    if not results:
        lines.append("no new cartridge to label")
    app.out.summary(
        {"library": name, "pool": pool_name, "media": [r.as_dict() for r in results]}, lines
    )
    explicit = [r.barcode for r in refused if r.barcode in set(barcodes)]
    if explicit:
        raise MediaError(f"not labelled: {', '.join(explicit)} (see above)")
