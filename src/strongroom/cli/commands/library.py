"""strongroom library: media libraries (virtual, mtx, changer scripts)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.cli.units import parse_size
from strongroom.errors import RepositoryNotFound
from strongroom.services.inventory import Detailed, Keys, Line, Report, Status, inventory_library
from strongroom.services.libraries import (
    create_virtual_library,
    export_cartridges,
    import_cartridges,
    library_status,
    move,
)
from strongroom.services.media_pools import open_catalog


@click.group()
def library() -> None:
    """Media libraries: a virtual one here, SCSI changers through mtx, changer scripts."""


@library.command("create")
@click.argument("name")
@click.option("--slots", type=click.IntRange(1, 10_000), required=True, help="Storage slots.")
@click.option("--drives", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--import-export", type=click.IntRange(0, 1024), default=0, show_default=True)
@click.option("--capacity", callback=parse_size, help="Bytes per cartridge (e.g. 64M; 16G).")
@click.option(
    "--cartridges", type=click.IntRange(0), default=0, help="Blank cartridges in the first slots."
)
@pass_app
def create(
    app: App,
    name: str,
    slots: int,
    drives: int,
    import_export: int,
    capacity: int | None,
    cartridges: int,
) -> None:
    """Make the virtual library NAME (a folder in your data dir)."""
    rows = create_virtual_library(
        name,
        slots=slots,
        drives=drives,
        import_export=import_export,
        capacity=capacity,
        cartridges=cartridges,
    )
    size = f", {human_bytes(capacity)} cartridges" if capacity else ""
    app.out.summary(
        {"name": name, "elements": [r.as_dict() for r in rows]},
        [
            f"created library {name}: {slots} slots, {import_export} import/export, "
            f"{drives} drives{size}, {cartridges} cartridges"
        ],
    )


@library.command("status")
@click.argument("name")
@pass_app
def status(app: App, name: str) -> None:
    """What is in every slot and drive (no cartridge moves)."""
    rows = library_status(name, app.settings)
    if app.out.json:
        app.out.emit({"name": name, "elements": [r.as_dict() for r in rows]})
        return
    table = []
    for r in rows:
        content = "empty"
        if r.full:
            content = r.barcode or "(no barcode)"
        origin = "" if r.loaded_from is None else f"slot {r.loaded_from}"
        table.append((r.kind, r.address, content, origin))
    app.out.table(["element", "address", "cartridge", "loaded from"], table, title=name)


@library.command("load")
@click.argument("name")
@click.argument("slot", type=click.IntRange(1))
@click.argument("drive", type=click.IntRange(0))
@pass_app
def load(app: App, name: str, slot: int, drive: int) -> None:
    """Load the cartridge in SLOT into DRIVE."""
    move(name, app.settings, "load", slot, drive)
    app.out.summary({"loaded": slot, "drive": drive}, [f"loaded slot {slot} into drive {drive}"])


@library.command("unload")
@click.argument("name")
@click.argument("drive", type=click.IntRange(0))
@click.argument("slot", type=click.IntRange(1), required=False)
@pass_app
def unload(app: App, name: str, drive: int, slot: int | None) -> None:
    """Put DRIVE's cartridge into SLOT (default: where it came from)."""
    move(name, app.settings, "unload", drive, slot)
    into = f"slot {slot}" if slot else "its slot"
    app.out.summary({"unloaded": drive, "slot": slot}, [f"unloaded drive {drive} into {into}"])


@library.command("transfer")
@click.argument("name")
@click.argument("source", type=click.IntRange(1))
@click.argument("destination", type=click.IntRange(1))
@pass_app
def transfer(app: App, name: str, source: int, destination: int) -> None:
    """Move the cartridge in slot SOURCE to slot DESTINATION."""
    move(name, app.settings, "transfer", source, destination)
    app.out.summary(
        {"source": source, "destination": destination},
        [f"moved slot {source} to slot {destination}"],
    )


@library.command("import")
@click.argument("name")
@click.argument("barcodes", nargs=-1)
@click.option("--unlabelled", type=click.IntRange(0), default=0, help="Cartridges with no barcode.")
@pass_app
def import_(app: App, name: str, barcodes: tuple[str, ...], unlabelled: int) -> None:
    """Put cartridges in the virtual library's import/export slots (new
    blank ones, or ones exported before with their data)."""
    slots = import_cartridges(name, app.settings, list(barcodes), unlabelled)
    app.out.summary(
        {"slots": slots},
        [
            f"put {len(slots)} cartridge{'s' if len(slots) != 1 else ''} in import/export "
            f"slot{'s' if len(slots) != 1 else ''} {', '.join(map(str, slots))}"
        ],
    )


@library.command("export")
@click.argument("name")
@click.argument("barcodes", nargs=-1, required=True)
@pass_app
def export(app: App, name: str, barcodes: tuple[str, ...]) -> None:
    """Take cartridges out of the virtual library (kept outside for a later import)."""
    export_cartridges(name, app.settings, list(barcodes))
    app.out.summary({"exported": list(barcodes)}, [f"exported {', '.join(barcodes)}"])


@contextmanager
def _keys(app: App, label_only: bool) -> Iterator[Keys | None]:
    """The open repository's keys, or None (label only): with --label-only,
    when no password can be had without a prompt, or with no repository."""
    if label_only:
        yield None
        return
    if not app.has_password_source() and not sys.stdin.isatty():
        app.out.notice("no repository password: cartridges are classified by their label only")
        yield None
        return
    try:
        with app.repository() as repo:
            yield Keys(repo.config.id, repo.master)
    except RepositoryNotFound:
        app.out.notice(
            f"no repository at {app.settings.repository}: cartridges are classified by label only"
        )
        yield None


def _run_inventory(
    app: App, name: str, detailed: Detailed, label_only: bool, wait: float, rebuild: bool
) -> None:
    with _keys(app, label_only) as keys, open_catalog(app.settings) as catalog:
        report = inventory_library(
            name, app.settings, catalog, detailed=detailed, keys=keys, wait=wait, rebuild=rebuild
        )
    for failure in (d for d in report.notifications if not d.ok):
        app.out.notice(f"notifier {failure.notifier} failed: {failure.message}")
    if app.out.json:
        app.out.emit(report.as_dict())
        return
    for line in report.lines:
        app.out.info(_line_text(line))
    app.out.info(_summary(report))


def _line_text(line: Line) -> str:
    where = "-"
    if line.drive is not None:
        where = f"drive {line.drive}"
    elif line.slot is not None:
        where = f"slot {line.slot}"
    name = line.barcode or (f"media {line.media_id}" if line.media_id else "(no barcode)")
    text = f"{where:>9}  {name:<12}  {line.status.value}"
    if line.media_class is not None and line.status is not Status.CLEANING:
        text += f": {line.media_class}"
        if line.sessions:
            text += f", {line.sessions} sessions imported"
        if line.reason:
            text += f" ({line.reason})"
    if line.new_medium:
        text += "  [new medium]"
    return text


def _summary(report: Report) -> str:
    counts = [
        f"{len(report.having(Status.KNOWN)) + len(report.having(Status.BACK_ONLINE))} known",
        f"{len(report.having(Status.BACK_ONLINE))} back online",
        f"{len(report.having(Status.WENT_OFFLINE))} went offline",
        f"{len(report.having(Status.NEW))} new",
        f"{len(report.having(Status.NO_BARCODE))} without barcode",
        f"{len(report.having(Status.CLEANING))} cleaning",
    ]
    text = f"library {report.library}: {', '.join(counts)}"
    text += f"; {len(report.detailed)} read in detail, {len(report.new_media)} new media"
    if report.forgotten:
        text += f" ({report.forgotten} media forgotten first)"
    return text


@library.command("inventory")
@click.argument("name")
@click.option("--detailed", "mode", flag_value="all", help="Read every cartridge (not cleaning).")
@click.option("--no-detailed", "mode", flag_value="none", help="Barcodes only: read no cartridge.")
@click.option("--label-only", is_flag=True, help="Do not open the repository: no import.")
@click.option(
    "--wait", type=click.FloatRange(0), default=0.0, help="Seconds to wait for a busy library."
)
@pass_app
def inventory_command(app: App, name: str, mode: str | None, label_only: bool, wait: float) -> None:
    """Barcodes of every slot (no cartridge moves), then a detailed read of the
    new cartridges and those without a barcode."""
    _run_inventory(app, name, Detailed(mode or "auto"), label_only, wait, rebuild=False)


@library.command("rebuild-catalog")
@click.argument("name")
@click.option("--label-only", is_flag=True, help="Do not open the repository: no import.")
@click.option(
    "--wait", type=click.FloatRange(0), default=0.0, help="Seconds to wait for a busy library."
)
@pass_app
def rebuild_catalog(app: App, name: str, label_only: bool, wait: float) -> None:
    """Forget the media in the library now, then read every cartridge: the
    media catalog rebuilt from the media alone (offline media are kept)."""
    _run_inventory(app, name, Detailed.ALL, label_only, wait, rebuild=True)
