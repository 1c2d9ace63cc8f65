"""Export tests: block points made by the real CLI, VHDs judged by qemu-img and libvhdi."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.cli import CliResult, run_cli
from tests.helpers.libvhdi import open_chain

# Runs `strongroom` with the export command registered even before cli/main.py
# lists it (the registry is read when the program starts, in the subprocess).
_LAUNCHER = (
    "import sys; from strongroom.cli import main as m; "
    "m.COMMANDS.setdefault('export', 'export:export'); sys.exit(m.main(sys.argv[1:]))"
)

ExportCli = Callable[..., CliResult]


@pytest.fixture
def export_cli(cli_env: dict[str, str]) -> ExportCli:
    """`export_cli("export", ...)`: like the `cli` fixture, with `export` registered."""

    def run(*args: str) -> CliResult:
        return run_cli(list(args), cli_env, command=[sys.executable, "-c", _LAUNCHER])

    return run


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def libvhdi_read(paths: list[Path]) -> bytes:
    """The whole disk of the last of `paths`, each the parent of the next, read by libvhdi."""
    with open_chain(paths) as top:
        return bytes(top.read_buffer_at_offset(int(top.get_media_size()), 0))
