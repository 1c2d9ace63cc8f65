"""strongroom mount: browse every point as a read-only file system (FUSE)."""

from __future__ import annotations

import sys

import click

from strongroom.cli.commands.agent import server_options, through_server
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
@server_options
@pass_app
def mount(
    app: App,
    mountpoint: str,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    allow_other: bool,
    owner_root: bool,
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """Mount the repository read-only at MOUNTPOINT (an empty folder), in the foreground.

    ids/ID, snapshots/TIME, hosts/HOST/TIME and tags/TAG/TIME hold each point
    (with a `latest` link); an image point shows disk.raw, files/ and
    partitions/N/, a VM point disks/NAME.raw. Ctrl-C or `fusermount3 -u
    MOUNTPOINT` unmounts. Through a backup server (--server): this machine's
    own points (and its cluster's VM points), read through the server."""
    from strongroom.services.mount import check_mountpoint, mount_repository, mount_store
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
    flt = PointFilter(list(hosts), list(tags), list(paths))
    if through_server(servers, agent_config):
        from strongroom.services.agent_backup import agent_points, open_agent

        with open_agent(agent_config, list(servers)) as (_config, store):
            mount_store(
                store,
                mountpoint,
                lambda: [p for p in agent_points(store) if flt.matches(p)],
                allow_other=allow_other,
                owner_root=owner_root,
                on_ready=ready,
            )
        app.out.info(f"{shown} unmounted")
        return
    with app.repository(LockMode.NONE) as repo:
        mount_repository(
            repo,
            mountpoint,
            flt,
            allow_other=allow_other,
            owner_root=owner_root,
            on_ready=ready,
        )
    app.out.info(f"{shown} unmounted")
