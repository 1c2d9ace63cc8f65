"""Run `strongroom ARGS...` as the unprivileged user `nobody`; started as root.

Used when the Python installation is not readable by `nobody` (e.g. it lives
below /root), so `setpriv ... strongroom` cannot even start. Everything
strongroom needs from that installation is imported while still root; then
all privileges are dropped for good (supplementary groups, gid, uid) and
strongroom itself is imported afresh, so its import-time checks (such as
"am I root?") see the unprivileged user. Only then does it touch any file.
"""

from __future__ import annotations

import io
import os
import sys

NOBODY = 65534


def _preload() -> None:
    """Import, as root, every module a strongroom command may import later."""
    import importlib
    import pkgutil

    import strongroom

    for info in pkgutil.walk_packages(strongroom.__path__, "strongroom."):
        if info.name.endswith("__main__"):  # that one would run the program
            continue
        if info.name.startswith("strongroom.catalog.migrations"):
            continue  # Alembic's scripts: loaded by Alembic, by path, inside a migration
        importlib.import_module(info.name)
    for name in sorted(_imported_inside_functions(strongroom.__path__[0])):
        try:  # what strongroom imports lazily (pyfastcdc, numpy, paramiko, glob, ...)
            importlib.import_module(name)
        except Exception:  # an optional module this machine lacks
            pass
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(file=io.StringIO(), force_terminal=True)
    console.print(Table("a", "b"))
    with Progress(console=console) as bar:
        bar.add_task("x", total=1)
    for name in [m for m in sys.modules if m == "strongroom" or m.startswith("strongroom.")]:
        del sys.modules[name]


def _imported_inside_functions(root: str) -> set[str]:
    """Every module an `import` statement anywhere in strongroom's sources names
    (lazy imports included: start-up time keeps many inside functions)."""
    import ast
    from pathlib import Path

    names: set[str] = set()
    for path in Path(root).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return {n for n in names if not n.startswith("strongroom")}


def main() -> int:
    _preload()
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    assert os.geteuid() == NOBODY and os.getegid() == NOBODY
    from strongroom.cli.main import main as strongroom_main

    return strongroom_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
