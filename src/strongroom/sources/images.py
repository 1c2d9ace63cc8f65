"""Opening a disk image by path, whatever it is: the format decision shared by
image backup and the VHD backup mode.

Raw files and block devices are read directly, VHDs (of any type, with their
parents) by strongroom's own reader, since qemu's vpc driver ignores a
differencing disk's parent, and every other format through a private qemu-nbd.

The guest never chooses what the host reads. A raw disk's guest writes its
first and last sectors, so a format found by looking at the file may be the
guest's choice, and such an image may name other files (a qcow2 backing file
or external data file, a VHD parent, VMDK extents). The rules (docs/design.md
§9a):
- the format is the user's (`--format`), else the one an earlier backup
  recorded, else strongroom's own sniff (sources/image_refs.py), never
  qemu's probe; a sniffed format whose metadata strongroom cannot inspect
  (vmdk, qed, qcow, ...) is opened only when named with --format;
- a qcow2/qcow/qed/vmdk image that names a backing file, data file or extent
  is refused unless the user allowed it (`--allow-backing`), the format given
  or not; a VHD's parent is followed without it only when it lies, symlinks
  resolved, in the child's own folder (and carries the id the child records);
- a name that is not a plain path (`json:{...}`, `nbd:`, `http:`, ...) is
  refused always, and every file followed is shown by its real path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from strongroom.errors import SourceError, UsageError
from strongroom.model.names import printable
from strongroom.sources.block import BlockSource, RawSource
from strongroom.sources.image_refs import (
    FORMATS,
    SNIFF_OPENS,
    ImageReferenceError,
    check_reference_name,
    header_refs,
    resolve_reference,
    sniff_format,
)
from strongroom.sources.qemu import QemuImageSource
from strongroom.sources.qemu_img import ChainFile, ImageInfo, image_info
from strongroom.sources.vhd import VhdSource, looks_like_vhd

_MAX_CHAIN = 64
_HEADER_FORMATS = ("qcow2", "qcow", "qed")


@dataclass(frozen=True)
class OpenRules:
    """What the user said about an image: its format (`--format`; None:
    strongroom sniffs) and whether the files it names may be read."""

    format: str | None = None
    allow_backing: bool = False


def check_format(fmt: str | None) -> str | None:
    """The canonical name of a `--format` value (vpc is vhd); UsageError for others."""
    if fmt is None:
        return None
    fmt = "vhd" if fmt == "vpc" else fmt
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    return fmt


def probe_image(path: str, pinned: str | None = None, rules: OpenRules = OpenRules()) -> ImageInfo:
    """The image's format and the files reading it reads; refuses (SourceError,
    `ImageReferenceError`) what the rules above do not allow.

    The format is `rules.format` if given, else `pinned` (what an earlier
    backup recorded), else strongroom's sniff."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror}") from None
    if pinned == "vpc":
        pinned = "vhd"
    fmt = check_format(rules.format) or (pinned if pinned in FORMATS else None)
    # A device is raw unless named otherwise (an LV holding a qcow2: --format).
    plain = not os.path.isfile(path) or st.st_size == 0
    if fmt == "raw" or (fmt is None and plain):
        return ImageInfo(os.path.abspath(path), "raw", st.st_size)
    if fmt is None:
        fmt = "vhd" if looks_like_vhd(path) else sniff_format(path)
        if fmt not in SNIFF_OPENS:
            raise ImageReferenceError(
                f"{path} looks like a {fmt} image, whose metadata may name other host files:"
                f" strongroom opens it only when told (--format {fmt}, with --allow-backing"
                " if it names other files), or --format raw backs up the file's own bytes"
            )
    if fmt == "raw":
        return ImageInfo(os.path.abspath(path), "raw", st.st_size)
    if fmt == "vhd":
        return ImageInfo(os.path.abspath(path), "vhd", st.st_size, follow=rules.allow_backing)
    return _qemu_image(path, fmt, rules.allow_backing)


def _refuse(path: str, what: str, name: str) -> ImageReferenceError:
    real = resolve_reference(os.path.abspath(path), name)
    shown = name if real == name else f"{name} ({real})"
    return ImageReferenceError(
        f"{path} names {what} {shown}: strongroom reads no file an image names unless told:"
        " --allow-backing to read it too, or --format raw to back up the file's own bytes"
    )


def _qemu_image(path: str, fmt: str, allow: bool) -> ImageInfo:
    """An image qemu reads: its references checked before qemu opens it."""
    top = os.path.abspath(path)
    refs = header_refs(top, fmt) if fmt in _HEADER_FORMATS else None
    if refs is not None:
        if refs.external_data and not refs.data_file:
            raise ImageReferenceError(f"{path} keeps its data in an external file it does not name")
        named = [("backing file", refs.backing), ("external data file", refs.data_file)]
        for what, name in named:
            if name:
                check_reference_name(path, what, name)
                if not allow:
                    raise _refuse(path, what, name)
    # qemu-img info opens no backing file; with follow False it is told so
    # explicitly, and a data file was refused above.
    info = image_info(top, fmt, follow=False)
    # qemu's reading of the header must agree with ours, or nothing opens.
    seen = [
        ("backing file", info.backing_name, refs.backing if refs else None),
        ("external data file", info.data_file_name, refs.data_file if refs else None),
    ]
    for what, qemu_says, we_read in seen:
        if refs is not None and (qemu_says or None) != (we_read or None):
            raise ImageReferenceError(
                f"{path}: qemu reads {what} {qemu_says!r} where strongroom reads {we_read!r};"
                " --format raw backs up the file's own bytes"
            )
        if refs is None and qemu_says:
            check_reference_name(path, what, qemu_says)
            if not allow:
                raise _refuse(path, what, qemu_says)
    for name in info.extent_names:
        check_reference_name(path, "extent file", name)
        if not allow:
            raise _refuse(path, "extent file", name)
    if not (info.backing_name or info.data_file_name or info.extent_names):
        return info  # self-contained: qemu is told "backing": null all the same
    info.follow = True
    if info.data_file_name:
        info.data_file = resolve_reference(top, info.data_file_name)
    if info.backing_name:
        info.chain = _walk_chain(top, fmt, info.backing_name, refs.backing_format if refs else None)
        info.backing = info.chain[0].path
    info.plain_clusters = info.plain_clusters and not info.data_file
    return info


def _walk_chain(top: str, fmt: str, name: str, name_format: str | None) -> list[ChainFile]:
    """Every file below `top` (allowed by the user), each name checked and
    resolved as qemu resolves it; a backing file is raw or qcow2."""
    chain: list[ChainFile] = []
    seen = {os.path.realpath(top)}
    image = top
    backing: str | None = name
    backing_fmt = name_format
    while backing:
        check_reference_name(image, "backing file", backing)
        real = resolve_reference(image, backing)
        if real in seen or len(chain) >= _MAX_CHAIN:
            raise ImageReferenceError(f"{top}: its backing chain loops or is deeper than 64")
        seen.add(real)
        if not os.path.isfile(real):
            raise SourceError(f"{top}: backing file {real} is missing or not a file")
        if backing_fmt is not None and backing_fmt not in FORMATS:
            # Written by whoever wrote the image (a guest): a protocol or a
            # json: driver there would have qemu open what it names.
            raise ImageReferenceError(
                f"{image}: backing file {real} is given the format "
                f"{printable(backing_fmt)}, which is not an image format strongroom knows"
            )
        below_fmt = backing_fmt or sniff_format(real)
        if below_fmt not in ("raw", "qcow2") or fmt not in _HEADER_FORMATS:
            chain.append(ChainFile(real, below_fmt, False))
            break  # qemu follows what lies below; strongroom maps no further
        if below_fmt == "raw":
            chain.append(ChainFile(real, "raw", True))
            break
        refs = header_refs(real, "qcow2")
        if refs.external_data:
            chain.append(ChainFile(real, "qcow2", False))
            if refs.data_file:
                check_reference_name(real, "external data file", refs.data_file)
                chain.append(ChainFile(resolve_reference(real, refs.data_file), "raw", False))
        else:
            chain.append(ChainFile(real, "qcow2", _plain_qcow2(real)))
        image = backing if os.path.isabs(backing) else os.path.join(os.path.dirname(image), backing)
        backing, backing_fmt = refs.backing, refs.backing_format
    return chain


def _plain_qcow2(path: str) -> bool:
    try:
        return image_info(path, "qcow2").plain_clusters
    except SourceError:
        return False


def open_image(info: ImageInfo) -> BlockSource:
    """A reader for the probed image; the caller closes it."""
    if info.format == "vhd":
        return VhdSource(info.path, follow_anywhere=info.follow)
    if info.format == "raw":
        return RawSource(info.path)
    return QemuImageSource(info)
