"""strongroom version: the program, its repository format and its libraries."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.services.about import about


@click.command()
@pass_app
def version(app: App) -> None:
    """Print strongroom's version, the repository format version it writes, the
    Python it runs on and the versions of its libraries (for bug reports)."""
    doc = about()
    libraries: dict[str, str | None] = doc["libraries"]  # type: ignore[assignment]
    listed = ", ".join(f"{name} {v}" for name, v in libraries.items() if v is not None)
    app.out.summary(
        doc,
        [
            f"strongroom {doc['version']}",
            f"repository format {doc['format_version']}",
            f"python {doc['python']} ({doc['platform']})",
            f"libraries: {listed}",
        ],
    )
