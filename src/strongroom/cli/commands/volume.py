"""strongroom volume: protected volumes (an image behind QEMU's block layer, mounted)."""

from __future__ import annotations

from typing import Any

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.cli.units import parse_size
from strongroom.model.names import printable
from strongroom.services.session import LockMode
from strongroom.services.volume_cycle import volume_cycle
from strongroom.services.volumes import (
    all_volumes,
    attach_volume,
    create_volume,
    detach_volume,
    find_volume,
    volume_status,
)


@click.group()
def volume() -> None:
    """Protected volumes: a file system whose every write passes QEMU's block layer."""


@volume.command("create")
@click.argument("image")
@click.option("--size", required=True, callback=parse_size, help="Virtual size (e.g. 10G).")
@click.option(
    "--format", "fmt", type=click.Choice(["qcow2", "raw"]), default="qcow2", show_default=True
)
@click.option("--fs", default="ext4", show_default=True, help="File system to make on it.")
@pass_app
def create(app: App, image: str, size: int, fmt: str, fs: str) -> None:
    """Make a new image and a file system on it."""
    state = create_volume(image, size, fmt, fs)
    app.out.summary(
        {"image": state.image, "format": fmt, "size": size, "fs": fs},
        [f"created {printable(state.image)} ({fmt}, {human_bytes(size)}, {fs})"],
    )


@volume.command("attach")
@click.argument("image")
@click.option("--mount", "mount", required=True, help="Folder to mount the file system on.")
@click.option("--fs", default="ext4", show_default=True, help="The image's file system.")
@pass_app
def attach(app: App, image: str, mount: str, fs: str) -> None:
    """Serve IMAGE through qemu-storage-daemon and mount its file system."""
    state = attach_volume(image, mount, fs)
    app.out.summary(
        {"image": state.image, "mount": state.mount, "loop": state.loop, "pid": state.pid},
        [
            f"attached {printable(state.image)} at {printable(state.mount)}"
            f" ({state.loop}, daemon pid {state.pid})"
        ],
    )


@volume.command("detach")
@click.argument("target")
@pass_app
def detach(app: App, target: str) -> None:
    """Unmount, detach the loop device and stop the daemon (TARGET: mount folder or image)."""
    result = detach_volume(target)
    for line in result.found:
        app.out.warn(line)
    app.out.summary(
        {"image": result.state.image, "done": result.done, "found": result.found},
        [*result.done, f"detached {printable(result.state.image)}"],
    )


@volume.command("cycle")
@click.argument("target")
@click.option(
    "--changed-since",
    type=click.Choice(["auto", "compare", "none"]),
    default="auto",
    show_default=True,
    help="auto: the dirty bitmap; compare: every block against the last point.",
)
@click.option("--tag", "tags", multiple=True, help="Tag for the point (repeatable).")
@pass_app
def cycle(app: App, target: str, changed_since: str, tags: tuple[str, ...]) -> None:
    """Take one point now: freeze, snapshot, thaw, read the changed blocks."""
    state = find_volume(target)
    with app.repository(LockMode.SHARED) as repo, app.out.progress("volume") as progress:
        result = volume_cycle(
            repo, state, changed_since=changed_since, tags=list(tags), progress=progress
        )
    for warning in result.warnings:
        app.out.warn(warning)
    s = result.summary
    note = f" ({s['tracker_note']})" if s.get("tracker_note") else ""
    held = "not frozen" if result.held_ms is None else f"writers held {result.held_ms:.0f} ms"
    app.out.summary(
        {
            "point_id": result.point.id,
            "parent": result.point.parent,
            "consistency": result.consistency,
            **{k: s.get(k) for k in ("tracker", "tracker_note", "bytes_read", "bytes_changed")},
            **{k: s.get(k) for k in ("dirty_bytes", "data_added_stored", "held_ms", "seconds")},
        },
        [
            f"point {result.point.short_id} of {printable(state.image)} saved"
            f" ({result.consistency}; {held}); tracker {result.tracker}{note};"
            f" read {human_bytes(int(s['bytes_read']))},"
            f" changed {human_bytes(int(s['bytes_changed']))}"
        ],
    )


@volume.command("list")
@pass_app
def list_volumes(app: App) -> None:
    """The attached volumes."""
    states, errors = all_volumes()
    for line in errors:
        app.out.warn(line)
    if app.out.json:
        app.out.document(
            [{"image": s.image, "mount": s.mount, "format": s.format, "fs": s.fs} for s in states]
        )
        return
    app.out.table(
        ["Image", "Mount", "Format", "FS"],
        [(printable(s.image), printable(s.mount), s.format, s.fs) for s in states],
    )


@volume.command("status")
@click.argument("targets", nargs=-1)
@pass_app
def status(app: App, targets: tuple[str, ...]) -> None:
    """Per volume: daemon, loop device, mount, dirty bitmaps, sync, last cycle."""
    errors: list[str] = []
    if targets:
        states = [find_volume(t) for t in targets]
    else:
        states, errors = all_volumes()
    for line in errors:
        app.out.warn(line)
    found = [volume_status(s) for s in states]
    if app.out.json:
        app.out.document(found)
        return
    app.out.table(
        ["Image", "Mount", "Daemon", "Loop", "Dirty", "In sync", "Held", "Last point", "Problems"],
        [_row(doc) for doc in found],
    )


def _row(doc: dict[str, Any]) -> tuple[str, ...]:
    bitmaps = doc["bitmaps"] or []
    dirty = sum(int(b["dirty_bytes"]) for b in bitmaps if b["recording"])
    return (
        printable(doc["image"]),
        printable(doc["mount"]),
        f"pid {doc['daemon']['pid']}" if doc["daemon"]["running"] else "not running",
        doc["loop"]["device"] if doc["loop"]["present"] else "gone",
        human_bytes(dirty) if doc["bitmaps"] is not None else "?",
        "yes" if doc["in_sync"] else f"no: {printable(doc['sync_note'])}",
        f"{doc['held_ms']:.0f} ms" if doc["held_ms"] else "",
        (doc["last_point"] or "")[:8],
        printable("; ".join(doc["problems"])),
    )
