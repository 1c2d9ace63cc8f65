"""strongroom mount: browse every point as a read-only file system (FUSE)."""

from __future__ import annotations

import sys

import click

from strongroom.cli.commands.points import point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import plural
from strongroom.model.names import printable
from strongroom.services.session import LockMode


@click.command()
@click.argument("mountpoint")
@point_filter_options
@click.option(
    "--allow-other", is_flag=True, help="Let other users in too (the stored modes still apply)."
)
@click.option("--owner-root", is_flag=True, help="Show every entry as owned by root.")
@pass_app
def mount(
    app: App,
    mountpoint: str,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    allow_other: bool,
    owner_root: bool,
) -> None:
    """Mount the repository read-only at MOUNTPOINT (an empty folder), in the foreground.

    ids/ID, snapshots/TIME, hosts/HOST/TIME and tags/TAG/TIME hold each point
    (with a `latest` link); an image point shows disk.raw, files/ and
    partitions/N/, a VM point disks/NAME.raw. Ctrl-C or `fusermount3 -u
    MOUNTPOINT` unmounts."""
    from strongroom.services.mount import check_mountpoint, mount_repository
    from strongroom.services.points import PointFilter

    shown = printable(mountpoint)

    def ready(count: int) -> None:
        if app.out.json:
            app.out.emit({"message_type": "mounted", "mountpoint": mountpoint, "points": count})
            return
        app.out.info(
            f"Repository mounted at {shown} ({plural(count, 'point')}); press Ctrl-C or run "
            f"`fusermount3 -u {shown}` to unmount"
        )
        sys.stdout.flush()

    check_mountpoint(mountpoint)  # before a password is asked for
    with app.repository(LockMode.NONE) as repo:
        mount_repository(
            repo,
            mountpoint,
            PointFilter(list(hosts), list(tags), list(paths)),
            allow_other=allow_other,
            owner_root=owner_root,
            on_ready=ready,
        )
    app.out.info(f"{shown} unmounted")
