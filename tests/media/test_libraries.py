"""Opening a library by name: [library.NAME] tables, or a virtual library's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.config import load_settings
from strongroom.errors import ConfigError, MediaNotFound
from strongroom.media.libraries import open_library
from strongroom.media.mtx import MtxChanger
from strongroom.media.script_changer import ScriptChanger
from strongroom.media.virtual import Layout, VirtualLibrary


def settings_from(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(env={}, path=path)


def test_config_tables_open_each_kind(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        """
[library.tape]
kind = "mtx"
device = "/dev/sg3"
drives = ["/dev/nst0", "/dev/nst1"]
mtx = "/usr/sbin/mtx"
timeout = 30
cleaning_prefix = "CLN"

[library.disks]
kind = "script"
script = "/etc/bareos/disk-changer"
device = "/etc/bareos/disk-changer.conf"

[library.lab]
kind = "virtual"
path = "%s"
"""
        % (tmp_path / "lab"),
    )
    tape = open_library("tape", settings)
    assert isinstance(tape, MtxChanger)
    assert (tape.device, tape.drives, tape.mtx, tape.timeout) == (
        "/dev/sg3",
        ["/dev/nst0", "/dev/nst1"],
        "/usr/sbin/mtx",
        30.0,
    )
    disks = open_library("disks", settings)
    assert isinstance(disks, ScriptChanger) and disks.control == "/etc/bareos/disk-changer.conf"
    with pytest.raises(MediaNotFound):
        open_library("lab", settings)  # not created yet
    VirtualLibrary.create("lab", Layout(slots=2, drives=1, import_export=0), root=tmp_path / "lab")
    assert isinstance(open_library("lab", settings), VirtualLibrary)


def test_a_virtual_library_needs_no_config() -> None:
    VirtualLibrary.create("plain", Layout(slots=2, drives=1, import_export=1))
    library = open_library("plain", load_settings(env={}))
    assert len(library.status().slots) == 3
    with pytest.raises(MediaNotFound, match="no library other"):
        open_library("other", None)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "robot"', "kind must be one of"),
        ('kind = "mtx"', "device .* is required"),
        ('kind = "script"\ndevice = "/dev/sg0"', "script .* is required"),
        ('kind = "mtx"\ndevice = "/dev/sg0"\ndrives = "/dev/nst0"', "drives must be a list"),
        ('kind = "mtx"\ndevice = "/dev/sg0"\ntimeout = 0', "timeout"),
        ('colour = "blue"', "unknown setting"),
    ],
)
def test_bad_library_tables(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from(tmp_path, f"[library.x]\n{table}\n")
