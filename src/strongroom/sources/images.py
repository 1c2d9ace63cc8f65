"""Opening a disk image by path, whatever it is: the format probe shared by
image backup and the VHD backup mode.

Raw files and block devices are read directly, VHDs (of any type, with their
parents) by strongroom's own reader, since qemu's vpc driver ignores a
differencing disk's parent, and every other format through a private qemu-nbd.
"""

from __future__ import annotations

import os

from strongroom.errors import SourceError
from strongroom.sources.block import BlockSource, RawSource
from strongroom.sources.qemu import ImageInfo, QemuImageSource, image_info
from strongroom.sources.vhd import VhdSource, looks_like_vhd


def probe_image(path: str, pinned: str | None = None) -> ImageInfo:
    """The image's format: `pinned` (what an earlier backup recorded) if given,
    else a VHD's footer (`virtual_size` is then the file's size), else qemu's guess."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror}") from None
    if not os.path.isfile(path) or st.st_size == 0 or pinned == "raw":
        return ImageInfo(os.path.abspath(path), "raw", st.st_size)
    if pinned == "vhd" or (pinned in (None, "vpc") and looks_like_vhd(path)):
        return ImageInfo(os.path.abspath(path), "vhd", st.st_size)
    try:
        return image_info(path, pinned)
    except SourceError as err:
        if "not installed" in str(err):
            return ImageInfo(os.path.abspath(path), "raw", st.st_size)
        raise


def open_image(info: ImageInfo) -> BlockSource:
    """A reader for the probed image; the caller closes it."""
    if info.format == "vhd":
        return VhdSource(info.path)
    if info.format == "raw":
        return RawSource(info.path)
    return QemuImageSource(info)
