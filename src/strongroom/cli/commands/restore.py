"""strongroom restore: bring a point's files back."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.errors import ExitCode
from strongroom.services.points import find_point
from strongroom.services.restore import restore_files
from strongroom.services.session import LockMode


@click.command()
@click.argument("point")
@click.option(
    "--target",
    "-t",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to restore into.",
)
@click.option(
    "--include", "-i", multiple=True, help="Restore only this path of the point (repeatable)."
)
@pass_app
def restore(app: App, point: str, target: str, include: tuple[str, ...]) -> None:
    """Restore POINT (an id prefix or 'latest') into TARGET."""
    out = app.out
    with app.repository(LockMode.SHARED) as repo, out.progress("restore") as progress:
        p = find_point(repo, point)
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
