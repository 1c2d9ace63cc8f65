"""strongroom serve: a block image point as a read-only NBD export."""

from __future__ import annotations

import signal
import threading

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.services.image_restore import serving
from strongroom.services.points import find_point
from strongroom.services.session import LockMode


@click.command()
@click.argument("point")
@click.option(
    "--socket", "socket_path", type=click.Path(dir_okay=False), help="Listen on this unix socket."
)
@click.option("--port", type=int, help="Listen on this TCP port on loopback (0: any free port).")
@click.option("--name", default="", help="Export name (default: empty, the default export).")
@pass_app
def serve(app: App, point: str, socket_path: str | None, port: int | None, name: str) -> None:
    """Serve image POINT over NBD, read-only, until interrupted. A VM point's
    disks are served together, each as an export named after its disk.

    Any NBD client reads it at once: qemu-img convert, nbdcopy, qemu-nbd, a VM
    booting from it. The repository stays locked (shared) while serving, so a
    prune waits.
    """
    out = app.out
    stop = threading.Event()
    with app.repository(LockMode.SHARED) as repo:
        p = find_point(repo, point)
        with serving(repo, p, socket_path=socket_path, port=port, name=name) as (server, served):
            if out.json:
                for s in served:
                    doc = {"point_id": p.id, "uri": s.uri, "size": s.size, "export": s.name}
                    out.emit({"message_type": "serving", **doc})
            else:
                for s in served:
                    what = f"disk {s.name} of point" if p.kind == "vm" else "point"
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
