"""What an image file says about itself, read by strongroom before qemu sees it.

A raw disk's guest writes any bytes into its first and last sectors, so the
format a probe finds may be the guest's choice; a qcow2 header chosen that way
can name `/host/secret` as its backing file or external data file, and qemu
would read that file as if it were the guest's disk. So strongroom never asks
qemu to guess: `sniff_format` recognises the formats by their magic itself,
and `qcow2_header` reads the names a qcow2 (or qcow, qed) header gives, so the
decision to open another file is made here, before any tool opens it. What
qemu is then told (`sources.qemu_img.image_args`) pins the driver and, unless
backing files were allowed, switches backing files off (`"backing": null`).

Every name is hostile: bounded in length, decoded strictly, and a name that
is not a plain path (qemu's `json:` pseudo-protocol, `nbd:`, `http:`, any
`WORD:` before the first slash) is refused whatever the user allowed.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from strongroom.errors import SourceError

# Formats read with strongroom's own readers, or by qemu when named or sniffed.
QEMU_FORMATS = ("qcow2", "vmdk", "vdi", "vhdx", "qed", "qcow", "parallels", "dmg", "bochs", "cloop")
FORMATS = ("raw", "vhd", *QEMU_FORMATS)
# Opened when sniffed: raw and vhd by strongroom, qcow2 after `qcow2_header`
# checked its names, vdi and vhdx because qemu follows no other file for them.
SNIFF_OPENS = ("raw", "vhd", "qcow2", "vdi", "vhdx")

_QCOW_MAGIC = b"QFI\xfb"
_QED_MAGIC = b"QED\x00"
_MAX_NAME = 1023  # qemu's own limit for a backing file name
_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_DATA_FILE = 0x44415441
_INCOMPAT_DATA_FILE = 1 << 2
_HEAD = 4096


class ImageReferenceError(SourceError):
    """An image names another file strongroom may not, or will never, open."""


def sniff_format(path: str) -> str:
    """The format the magic bytes of `path` announce (see FORMATS); "raw" for
    anything else. VHD (a footer at the end) is recognised by sources/vhd.py."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            size = os.fstat(f.fileno()).st_size
            tail = os.pread(f.fileno(), 512, size - 512) if size >= 512 else b""
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror}") from None
    if head.startswith(_QCOW_MAGIC) and len(head) >= 8:
        return "qcow" if struct.unpack_from(">I", head, 4)[0] == 1 else "qcow2"
    if head.startswith(_QED_MAGIC):
        return "qed"
    if head.startswith((b"KDMV", b"COWD")) or _vmdk_descriptor(head):
        return "vmdk"
    if len(head) >= 68 and struct.unpack_from("<I", head, 64)[0] == 0xBEDA107F:
        return "vdi"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith((b"WithoutFreeSpace", b"WithouFreSpacExt")):
        return "parallels"
    if head.startswith(b"Bochs Virtual HD Image"):
        return "bochs"
    if head.startswith(b"#!/bin/sh\n#V2.0 Format\n"):
        return "cloop"
    if tail.startswith(b"koly"):
        return "dmg"
    return "raw"


def _vmdk_descriptor(head: bytes) -> bool:
    """qemu's vmdk probe for a text descriptor: the first line that is not a
    comment or blank reads `version=1`, `2` or `3`."""
    for line in head.split(b"\n"):
        text = line.strip(b" \r")
        if not text or text.startswith(b"#"):
            continue
        return text in (b"version=1", b"version=2", b"version=3")
    return False


def check_reference_name(image: str, what: str, name: str) -> None:
    """Refuse, always, a reference that is not a plain path: qemu would read a
    `json:{...}` name as a whole block graph (any file, any NBD server), and a
    `WORD:` before the first slash as a protocol (nbd:, http:, ssh:, file:)."""
    head = name.split("/", 1)[0]
    if name.startswith("json:") or ":" in head:
        raise ImageReferenceError(
            f"{image} names {what} {_show(name)}, which is not a plain file path"
            " (a protocol or json: name): strongroom never follows it;"
            " --format raw backs up the file's own bytes"
        )
    if "\x00" in name:
        raise ImageReferenceError(f"{image} names {what} with a NUL byte in its name")


def _show(name: str) -> str:
    return repr(name if len(name) <= 120 else name[:117] + "...")


def resolve_reference(image: str, name: str) -> str:
    """Where qemu looks for `name`, named by `image` (relative to the folder of
    the image's path as given, as qemu does), with every symlink resolved."""
    joined = name if os.path.isabs(name) else os.path.join(os.path.dirname(image), name)
    return os.path.realpath(joined)


@dataclass(frozen=True)
class HeaderRefs:
    """The other files a qcow2/qcow/qed header names."""

    backing: str | None = None  # as written in the header
    backing_format: str | None = None
    data_file: str | None = None  # qcow2 external data file (None: in the image)
    external_data: bool = False  # the incompatible bit: data lives in another file


def header_refs(path: str, fmt: str) -> HeaderRefs:
    """Read the names the header of a qcow2, qcow or qed image gives. Raises
    SourceError for a header that cannot be that format's."""
    try:
        with open(path, "rb") as f:
            head = f.read(2 << 20)  # qcow2's largest cluster; names lie in cluster 0
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror}") from None
    try:
        if fmt == "qcow2":
            return _qcow2(head)
        if fmt == "qcow":
            offset, size = struct.unpack_from(">QI", head, 8)
            return HeaderRefs(backing=_name(head, offset, size))
        if fmt == "qed":
            offset, size = struct.unpack_from("<II", head, 56)
            return HeaderRefs(backing=_name(head, offset, size))
    except (struct.error, ValueError) as err:
        raise SourceError(
            f"{path}: damaged {fmt} header ({err}); --format raw backs up the file's own bytes"
        ) from None
    return HeaderRefs()


def _name(head: bytes, offset: int, size: int) -> str | None:
    if offset == 0 or size == 0:
        return None
    if size > _MAX_NAME or offset + size > len(head):
        raise ValueError("a file name longer than 1023 bytes or outside the header")
    raw = head[offset : offset + size]
    return raw.decode("utf-8")


def _qcow2(head: bytes) -> HeaderRefs:
    if not head.startswith(_QCOW_MAGIC):
        raise ValueError("no qcow2 magic")
    version, backing_offset, backing_size, cluster_bits = struct.unpack_from(">IQII", head, 4)
    if version not in (2, 3) or not 9 <= cluster_bits <= 21:
        raise ValueError(f"version {version}, cluster bits {cluster_bits}")
    cluster = 1 << cluster_bits
    incompat, header_length = 0, 72
    if version == 3:
        (incompat,) = struct.unpack_from(">Q", head, 72)
        (header_length,) = struct.unpack_from(">I", head, 100)
        if not 104 <= header_length <= cluster:
            raise ValueError(f"header length {header_length}")
    if backing_offset and backing_offset > cluster:
        raise ValueError("backing file name outside the first cluster")
    backing = _name(head, backing_offset, backing_size)
    # Header extensions: from the header's end to the backing name (or the
    # first cluster's end), each (type, length, data padded to 8 bytes).
    end = min(backing_offset or cluster, cluster, len(head))
    at = header_length
    backing_format = data_file = None
    for _ in range(4096):
        if at + 8 > end:
            break
        kind, length = struct.unpack_from(">II", head, at)
        if kind == 0:
            break
        data_at = at + 8
        if data_at + length > end:
            raise ValueError("a header extension runs past the first cluster")
        data = head[data_at : data_at + length]
        if kind == _EXT_BACKING_FORMAT:
            backing_format = data.decode("ascii")
        elif kind == _EXT_DATA_FILE:
            if length > _MAX_NAME:
                raise ValueError("an external data file name longer than 1023 bytes")
            data_file = data.decode("utf-8")
        at = data_at + (length + 7) // 8 * 8
    external = bool(incompat & _INCOMPAT_DATA_FILE)
    return HeaderRefs(
        backing=backing,
        backing_format=backing_format,
        data_file=data_file if external else None,
        external_data=external,
    )
