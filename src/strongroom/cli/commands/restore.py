"""strongroom restore: bring a point's files back."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.errors import ExitCode
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services.image_files import extract, open_image_filesystem
from strongroom.services.image_restore import restore_image
from strongroom.services.points import find_point
from strongroom.services.restore import restore_files
from strongroom.services.session import LockMode


@click.command()
@click.argument("point")
@click.option(
    "--target",
    "-t",
    required=True,
    help="Directory to restore files into; for an image point: a file, a block device "
    "or a writable NBD URI (or, with --include, a directory for files inside the image).",
)
@click.option(
    "--include", "-i", multiple=True, help="Restore only this path of the point (repeatable)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["raw", "qcow2"]),
    default="raw",
    show_default=True,
    help="Image points: format of the restored image file.",
)
@click.option(
    "--partition", type=int, help="Image points with --include: partition number (default: auto)."
)
@pass_app
def restore(
    app: App,
    point: str,
    target: str,
    include: tuple[str, ...],
    fmt: str,
    partition: int | None,
) -> None:
    """Restore POINT (an id prefix or 'latest') into TARGET."""
    out = app.out
    with app.repository(LockMode.SHARED) as repo:
        p = find_point(repo, point)
        if p.kind == "block":
            if include:
                restore_image_files_cmd(app, repo, p, target, list(include), partition)
            else:
                restore_image_cmd(app, repo, p, target, fmt)
            return
        with out.progress("restore") as progress:
            summary = restore_files(repo, p, target, list(include), progress)
    for w in summary.warnings:
        out.warn(w)
    if out.json:
        out.emit({"message_type": "summary", "point_id": p.id, **summary.as_dict()})
    else:
        out.info(
            f"restored point {p.short_id} to {target}: {summary.files} files, {summary.dirs} dirs, "
            f"{summary.other_entries} other entries, {human_bytes(summary.bytes_written)}"
        )
    if summary.damaged:
        out.error(f"{len(summary.damaged)} files could not be fully restored (damaged data):")
        for path in summary.damaged:
            out.notice(f"  {path}")
        raise SystemExit(ExitCode.FAILED)
    if summary.warnings:
        raise SystemExit(ExitCode.PARTIAL)


def restore_image_cmd(app: App, repo: Repository, p: RecoveryPoint, target: str, fmt: str) -> None:
    out = app.out
    with out.progress("restore") as progress:
        summary = restore_image(repo, p, target, fmt, progress)
    if out.json:
        out.emit({"message_type": "summary", "point_id": p.id, **summary.as_dict()})
    else:
        out.info(
            f"restored image point {p.short_id} to {target}: {human_bytes(summary.size)} disk, "
            f"{human_bytes(summary.bytes_written)} written, {summary.holes} hole blocks"
        )
    if summary.damaged:
        out.error(f"{len(summary.damaged)} blocks could not be restored (damaged data, left zero):")
        for what in summary.damaged:
            out.notice(f"  {what}")
        raise SystemExit(ExitCode.FAILED)


def restore_image_files_cmd(
    app: App,
    repo: Repository,
    p: RecoveryPoint,
    target: str,
    include: list[str],
    partition: int | None,
) -> None:
    out = app.out
    with open_image_filesystem(repo, p, partition) as fs:
        total = 0
        for path in include:
            total += extract(fs, path, target)
    if out.json:
        out.emit(
            {
                "message_type": "summary",
                "point_id": p.id,
                "filesystem": fs.kind,
                "paths": include,
                "bytes_written": total,
            }
        )
    else:
        out.info(
            f"restored {len(include)} paths from the {fs.kind} file system of image point "
            f"{p.short_id} to {target}: {human_bytes(total)}"
        )
