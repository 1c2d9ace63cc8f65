"""strongroom media: what the catalog knows of each cartridge.

`list` and `show` are plain functions registered on the group, so other
commands (`media label`) are added beside them.
"""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes, plural
from strongroom.errors import MediaError, UsageError
from strongroom.services.media_info import list_media, medium_doc, show_medium
from strongroom.services.media_pools import (
    label_media,
    library_name,
    open_catalog,
    open_changer,
)


@click.group()
def media() -> None:
    """Cartridges and removable disks in the media catalog."""


@media.command("list")
@click.option("--offline", is_flag=True, help="Only media not in any library.")
@click.option("--free", is_flag=True, help="Only media online and free to write.")
@click.option("--pool", metavar="P", help="Only the media of pool P.")
@click.option("--library", metavar="NAME", help="Only the media of this library.")
@pass_app
def list_command(
    app: App, offline: bool, free: bool, pool: str | None, library: str | None
) -> None:
    """Every medium: barcode, state, where it is, pool, contents."""
    with open_catalog(app.settings) as catalog:
        found = list_media(catalog, offline=offline, free=free, pool=pool, library=library)
    if app.out.json:
        app.out.emit({"media": [medium_doc(m) for m in found]})
        return
    rows = []
    for m in found:
        where = "offline"
        if m.online:
            spot = f"drive {m.drive}" if m.drive is not None else f"slot {m.slot}"
            where = f"{m.library} {spot}"
        rows.append(
            (
                m.barcode or "(none)",
                m.state.value,
                where,
                m.pool or "-",
                m.sessions,
                human_bytes(m.bytes_written),
            )
        )
    app.out.table(["barcode", "state", "where", "pool", "sessions", "written"], rows)


@media.command("show")
@click.argument("barcode")
@pass_app
def show_command(app: App, barcode: str) -> None:
    """One medium: state, location, pool, sessions and points, recent events."""
    with open_catalog(app.settings) as catalog:
        doc = show_medium(catalog, barcode)
    if app.out.json:
        app.out.emit(doc)
        return
    where = "offline"
    if doc["online"]:
        spot = f"drive {doc['drive']}" if doc["drive"] is not None else f"slot {doc['slot']}"
        where = f"library {doc['library']}, {spot}"
    lines = [
        f"{doc['barcode'] or '(no barcode)'}  media id {doc['media_id']}",
        f"  state     {doc['state']}" + (f" ({doc['error']})" if doc["error"] else ""),
        f"  where     {where}",
        f"  pool      {doc['pool'] or '-'}"
        + (f", number {doc['label_sequence']}" if doc["label_sequence"] else ""),
        f"  written   {doc['sessions']} sessions, {human_bytes(doc['bytes_written'])}, "
        f"{plural(doc['packs'], 'pack')}",
    ]
    if doc["expires_at"]:
        lines.append(f"  expires   {doc['expires_at']:%Y-%m-%d %H:%M}")
    for s in doc["session_list"]:
        points = ", ".join(p[:8] for p in s["points"]) or "no points"
        lines.append(f"  session {s['number']}  {s['written_at']:%Y-%m-%d %H:%M}  {points}")
    if doc["events"]:
        lines.append("  events:")
        lines += [f"    {e['at']:%Y-%m-%d %H:%M:%S}  {e['message']}" for e in doc["events"]]
    for line in lines:
        app.out.info(line)


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
