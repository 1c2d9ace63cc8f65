"""Open a library by name: from a `[library.NAME]` table of the config, or
the virtual library of that name in the data folder, which needs no config.

This is the one place that knows every kind; the rest of strongroom holds a
`Changer` (changer.py) and never asks which kind it is.
"""

from __future__ import annotations

from strongroom.config import LibrarySpec, Settings
from strongroom.errors import MediaNotFound
from strongroom.media.changer import Changer
from strongroom.media.mtx import MtxChanger
from strongroom.media.script_changer import ScriptChanger
from strongroom.media.virtual import VirtualLibrary, libraries_home


def open_library(name: str, settings: Settings | None = None) -> Changer:
    """The changer called `name` (MediaNotFound when neither the config nor
    the data folder has one)."""
    spec = settings.libraries.get(name) if settings is not None else None
    if spec is None:
        if (libraries_home() / name / "state.json").is_file():
            return VirtualLibrary(name)
        raise MediaNotFound(
            f"no library {name}: neither a [library.{name}] table in the config "
            "nor a virtual library of that name (strongroom library create)"
        )
    return from_spec(spec)


def from_spec(spec: LibrarySpec) -> Changer:
    if spec.kind == "mtx":
        assert spec.device is not None  # config.py requires it
        return MtxChanger(
            spec.name, spec.device, drives=spec.drives, mtx=spec.mtx, timeout=spec.timeout
        )
    if spec.kind == "script":
        assert spec.device is not None and spec.script is not None
        return ScriptChanger(
            spec.name, spec.script, spec.device, drives=spec.drives, timeout=spec.timeout
        )
    return VirtualLibrary(spec.name, spec.path)
