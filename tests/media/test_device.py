"""media/device.py: a drive device that is a file (or a link to one) is a
cartridge file; a link pointing nowhere is an empty drive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.errors import NoMedium
from strongroom.media.device import open_device
from strongroom.media.virtual_drive import VirtualDrive, create_cartridge


def test_file_and_link_devices(tmp_path: Path) -> None:
    cartridge = tmp_path / "vol1"
    create_cartridge(cartridge)
    link = tmp_path / "drive0"
    os.symlink(cartridge, link)
    with open_device(str(link), 4096) as drive:  # type: ignore[attr-defined]
        assert isinstance(drive, VirtualDrive)
        drive.write_record(b"x" * 4096)
        drive.write_filemark()
    with open_device(str(cartridge), 4096) as again:  # type: ignore[attr-defined]
        again.rewind()
        assert again.read_record() == b"x" * 4096
    cartridge.unlink()
    with pytest.raises(NoMedium, match="no cartridge loaded"):
        open_device(str(link), 4096)
