"""VHD (Microsoft Virtual Hard Disk 1.0): fixed, dynamic and differencing disks.

`write_vhd` streams a disk's extents into a VHD; `open_vhd` opens one, checks
every structure, and follows a differencing chain. `structs` holds the codecs.
Damage raises `VhdError`, a `SourceError`.
"""

from strongroom.formats.vhd.reader import (
    ParentRef,
    ParentResolver,
    VhdExtent,
    VhdReader,
    default_parent_resolver,
    open_vhd,
    read_footer,
)
from strongroom.formats.vhd.structs import MAX_SIZE, VhdError
from strongroom.formats.vhd.writer import (
    ParentInfo,
    VhdInfo,
    VhdTooLarge,
    Zeros,
    check_size,
    write_vhd,
)

__all__ = [
    "MAX_SIZE",
    "ParentInfo",
    "ParentRef",
    "ParentResolver",
    "VhdError",
    "VhdExtent",
    "VhdInfo",
    "VhdReader",
    "VhdTooLarge",
    "Zeros",
    "check_size",
    "default_parent_resolver",
    "open_vhd",
    "read_footer",
    "write_vhd",
]
