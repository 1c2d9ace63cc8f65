"""strongroom pool: media pools and their retention."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.services.media_pools import (
    create_pool,
    format_retention,
    list_pools,
    open_catalog,
    remove_pool,
    show_pool,
    summarize,
)


@click.group()
def pool() -> None:
    """Media pools: media that share a retention."""


@pool.command("create")
@click.argument("name")
@click.option(
    "--retention",
    required=True,
    help="How long a medium keeps its points after its last write: 7y, 18m (months), 30d, 12h.",
)
@click.option("--media-type", help="The media the pool takes (e.g. LTO-8); default: any.")
@pass_app
def create(app: App, name: str, retention: str, media_type: str | None) -> None:
    """Make the pool NAME."""
    with open_catalog(app.settings) as catalog:
        made = create_pool(catalog, name, retention, media_type)
        doc = summarize(catalog, made).as_dict()
    app.out.summary(
        doc, [f"created pool {name}: retention {format_retention(made.retention_seconds)}"]
    )


@pool.command("list")
@pass_app
def list_(app: App) -> None:
    """Every pool, its retention and its media by state."""
    with open_catalog(app.settings) as catalog:
        pools = list_pools(catalog)
    if app.out.json:
        app.out.emit({"pools": [p.as_dict() for p in pools]})
        return
    rows = [
        (
            p.pool.name,
            format_retention(p.pool.retention_seconds),
            p.pool.media_type or "any",
            p.media,
            ", ".join(f"{n} {s}" for s, n in sorted(p.states.items())) or "-",
        )
        for p in pools
    ]
    app.out.table(["pool", "retention", "media type", "media", "states"], rows)


@pool.command("show")
@click.argument("name")
@pass_app
def show(app: App, name: str) -> None:
    """A pool and its media."""
    with open_catalog(app.settings) as catalog:
        found, media = show_pool(catalog, name)
        summary = summarize(catalog, found)
    if app.out.json:
        doc = summary.as_dict()
        doc["media_list"] = [
            {
                "barcode": m.barcode,
                "media_id": str(m.media_id),
                "state": str(m.state),
                "online": m.online,
                "sequence": m.label_sequence,
                "bytes_written": m.bytes_written,
                "sessions": m.sessions,
                "last_written": m.last_written,
                "expires_at": m.expires_at,
            }
            for m in media
        ]
        app.out.emit(doc)
        return
    app.out.info(
        f"pool {name}: retention {format_retention(found.retention_seconds)}, "
        f"media type {found.media_type or 'any'}, {len(media)} media"
    )
    rows = [
        (
            m.label_sequence or "-",
            m.name,
            str(m.state),
            "online" if m.online else "offline",
            human_bytes(m.bytes_written),
            m.expires_at.strftime("%Y-%m-%d %H:%M") if m.expires_at else "-",
        )
        for m in media
    ]
    if rows:
        app.out.table(["seq", "medium", "state", "where", "written", "expires"], rows)


@pool.command("remove")
@click.argument("name")
@pass_app
def remove(app: App, name: str) -> None:
    """Remove the pool NAME (refused while media belong to it)."""
    with open_catalog(app.settings) as catalog:
        remove_pool(catalog, name)
    app.out.summary({"removed": name}, [f"removed pool {name}"])
