"""strongroom serve: a block image point as a read-only NBD export."""

from __future__ import annotations

import signal
import threading

import click

from strongroom.cli.commands.points import chosen_point, point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.model.kinds import PointKind
from strongroom.services.image_restore import (
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_MAX_CLIENTS,
    ServerLimits,
    serving,
)
from strongroom.services.session import LockMode


@click.command()
@click.argument("point")
@click.option(
    "--socket", "socket_path", type=click.Path(dir_okay=False), help="Listen on this unix socket."
)
@click.option("--port", type=int, help="Listen on this TCP port on loopback (0: any free port).")
@click.option("--name", default="", help="Export name (default: empty, the default export).")
@click.option(
    "--max-clients",
    type=click.IntRange(1, 4096),
    default=DEFAULT_MAX_CLIENTS,
    show_default=True,
    help="Clients served at once; more are accepted and closed at once.",
)
@click.option(
    "--client-timeout",
    type=click.FloatRange(0, 86400, min_open=True),
    default=DEFAULT_CLIENT_TIMEOUT,
    show_default=True,
    help="Seconds a client has for the whole handshake, and to take a reply; then it is dropped.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0, 86400, min_open=True),
    default=None,
    help="Drop a client that sends no request for this many seconds (default: never).",
)
@point_filter_options
@pass_app
def serve(
    app: App,
    point: str,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    socket_path: str | None,
    port: int | None,
    name: str,
    max_clients: int,
    client_timeout: float,
    idle_timeout: float | None,
) -> None:
    """Serve image POINT over NBD, read-only, until interrupted. A VM point's
    disks are served together, each as an export named after its disk.

    Any NBD client reads it at once: qemu-img convert, nbdcopy, qemu-nbd, a VM
    booting from it. The repository stays locked (shared) while serving, so a
    prune waits. Clients are bounded: --max-clients at once, each with a
    bounded number of requests and bytes in flight; one that stalls the
    handshake or stops taking replies is dropped after --client-timeout.
    """
    limits = ServerLimits(
        max_clients=max_clients, client_timeout=client_timeout, idle_timeout=idle_timeout
    )
    out = app.out
    stop = threading.Event()
    with app.repository(LockMode.SHARED) as repo:
        p = chosen_point(app, repo, point, hosts, tags, paths)
        with serving(repo, p, socket_path=socket_path, port=port, name=name, limits=limits) as (
            server,
            served,
        ):
            if out.json:
                for s in served:
                    doc = {"point_id": p.id, "uri": s.uri, "size": s.size, "export": s.name}
                    out.emit({"message_type": "serving", **doc})
            else:
                for s in served:
                    what = f"disk {s.name} of point" if p.kind == PointKind.VM else "point"
                    out.info(f"serving {what} {p.short_id} ({human_bytes(s.size)}) at {s.uri}")
                out.notice("press Ctrl-C to stop")
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
            server.start()
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                signal.signal(signal.SIGTERM, previous)
    if not out.json:
        out.info("stopped")
