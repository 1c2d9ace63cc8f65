"""Opening a drive's device: the Linux st driver for a tape device, the
virtual drive for a cartridge that is a file.

Disk changers and Bareos-style file autochangers point each drive's device
at the volume loaded in it (a symlink to the cartridge's file, or the file
itself); a tape drive is a character device. So a device that is a regular
file (after following symlinks) opens as a VirtualDrive over that file, and
anything else as the st driver. A drive link that points nowhere means the
drive is empty: NoMedium.
"""

from __future__ import annotations

import os
import stat

from strongroom.errors import NoMedium
from strongroom.media.drive import Drive
from strongroom.media.virtual_drive import VirtualDrive

# A file cartridge's capacity when the library does not say: the file system
# under it is the real limit (ENOSPC is end-of-medium, virtual_drive.py).
FILE_CAPACITY = 1 << 50


def open_device(path: str, record_size: int, *, capacity: int = FILE_CAPACITY) -> Drive:
    if os.path.islink(path) and not os.path.exists(path):
        raise NoMedium(f"drive {path}: no cartridge loaded (the link points nowhere)")
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        regular = False
    if regular:
        return VirtualDrive(path, capacity=capacity, record_size=record_size)
    from strongroom.media.st_drive import StDrive

    return StDrive(path, record_size=record_size)
