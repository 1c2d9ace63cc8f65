"""libvhdi (PyPI libvhdi-python, module pyvhdi): the independent VHD reader the
tests judge strongroom's VHDs with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def pyvhdi() -> Any:
    return pytest.importorskip("pyvhdi", reason="needs PyPI libvhdi-python")


@contextmanager
def open_chain(paths: list[Path]) -> Iterator[Any]:
    """The last of `paths` opened with each file the parent of the next (libvhdi
    checks the parent ids); yields the top file, closes them all."""
    mod = pyvhdi()
    files: list[Any] = []
    try:
        for path in paths:
            f = mod.file()
            f.open(str(path))
            if files:
                f.set_parent(files[-1])
            files.append(f)
        yield files[-1]
    finally:
        for f in reversed(files):
            f.close()
