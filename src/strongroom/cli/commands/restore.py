"""strongroom restore: bring a point's files back."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.errors import ExitCode, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services.image_files import extract, open_image_filesystem
from strongroom.services.image_restore import restore_image
from strongroom.services.points import PointFilter, find_point
from strongroom.services.restore import restore_files
from strongroom.services.session import LockMode
from strongroom.services.vm_restore import restore_vm
from strongroom.services.vms import vm_path


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
@click.option("--vm", metavar="NAME", help="POINT is a point of VM NAME ('latest': its newest).")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    help="VM points: restore only this disk (repeatable); one disk may go to a file, a device "
    "or an NBD URI (back into the block layer).",
)
@pass_app
def restore(
    app: App,
    point: str,
    target: str,
    include: tuple[str, ...],
    fmt: str,
    partition: int | None,
    vm: str | None,
    disks: tuple[str, ...],
) -> None:
    """Restore POINT (an id prefix or 'latest') into TARGET.

    A VM point restores every disk into the folder TARGET as DISK.raw (or .qcow2).
    """
    out = app.out
    with app.repository(LockMode.SHARED) as repo:
        p = find_point(repo, point, PointFilter(paths=[vm_path(vm)]) if vm else None)
        if vm and p.paths != [vm_path(vm)]:
            raise UsageError(f"point {p.short_id} is not a point of VM {vm}")
        if p.kind == PointKind.VM:
            if include or partition is not None:
                raise UsageError("--include/--partition browse an image: restore a --disk first")
            restore_vm_cmd(app, repo, p, target, fmt, list(disks))
            return
        if vm or disks:
            raise UsageError(f"point {p.short_id} is a {p.kind} point, not a VM point")
        if p.kind == PointKind.BLOCK:
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


def restore_vm_cmd(
    app: App, repo: Repository, p: RecoveryPoint, target: str, fmt: str, disks: list[str]
) -> None:
    out = app.out
    with out.progress("restore") as progress:
        done = restore_vm(repo, p, target, fmt, disks or None, progress)
    damaged = sum(len(s.damaged) for _, _, s in done)
    if out.json:
        out.emit(
            {
                "message_type": "summary",
                "point_id": p.id,
                "disks": [{"disk": d, "target": w, **s.as_dict()} for d, w, s in done],
            }
        )
    else:
        for disk, where, summary in done:
            out.info(f"disk {disk}: restored to {where} ({human_bytes(summary.bytes_written)})")
    if damaged:
        out.error(f"{damaged} blocks could not be restored (damaged data); they read as zeros")
        raise SystemExit(ExitCode.FAILED)
