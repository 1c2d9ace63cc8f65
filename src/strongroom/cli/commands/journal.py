"""strongroom journal run/status: the change journal of a directory tree."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from strongroom.cli.context import App, pass_app
from strongroom.services.journal import journal_status, run_journal


@click.group()
def journal() -> None:
    """The change journal of a directory tree (what protection cycles read)."""


@journal.command("run")
@click.argument("tree", type=click.Path(exists=True, file_okay=False))
@click.option("--state", required=True, type=click.Path(file_okay=False), help="State folder.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "fanotify", "inotify"]),
    default="auto",
    show_default=True,
    help="fanotify (one mark per file system; root, Linux 5.9+) or inotify.",
)
@pass_app
def run(app: App, tree: str, state: str, backend: str) -> None:
    """Track TREE in the foreground until SIGTERM/SIGINT (e.g. as a systemd service)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    run_journal(tree, state, stop, backend)


@journal.command("status")
@click.option("--state", required=True, type=click.Path(file_okay=False), help="State folder.")
@pass_app
def status(app: App, state: str) -> None:
    """In sync or not (and why), records pending, the tracker's backend."""
    doc = journal_status(state)
    if app.out.json:
        app.out.emit(doc)
        return
    for key, value in doc.items():
        app.out.info(f"{key}: {value}")
