"""What `qemu-img` says of an image file, and the offline dirty bitmaps it changes.

Every image is named to a qemu tool by `image_args`: its format pinned (never
qemu's probe) and, unless the user allowed it, with no backing file opened.
Offline bitmap changes go through `qemu-img bitmap`, which takes the image's
write lock: while a VM or a storage daemon holds the image, they fail with a
clear message, and a running disk is backed up through QMP instead
(`sources/live.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from strongroom.config import child_environment
from strongroom.errors import SourceError
from strongroom.sources.image_refs import sniff_format

QEMU_IMG = "qemu-img"


@dataclass(frozen=True)
class BitmapInfo:
    """A dirty bitmap as the block layer reports it."""

    name: str
    granularity: int
    recording: bool
    inconsistent: bool


@dataclass(frozen=True)
class ChainFile:
    """A file below an image in its backing chain, as strongroom walked it."""

    path: str  # every symlink resolved
    format: str
    plain: bool  # guest data lies unencoded in it (raw, or qcow2 without compression)


@dataclass
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    backing: str | None = None  # real path of the backing file
    bitmaps: list[BitmapInfo] = field(default_factory=list)
    plain_clusters: bool = False  # guest data lies unencoded in the file(s): see HostMap
    # Whether qemu may open the files the image names (backing, data file):
    # only when the user allowed it (--allow-backing); else qemu is told
    # `"backing": null` and an image naming one is refused before qemu runs.
    follow: bool = False
    chain: list[ChainFile] = field(default_factory=list)  # below the top, top first
    data_file: str | None = None  # real path of a qcow2 external data file (followed)
    backing_name: str | None = None  # what qemu read in the header, unresolved
    data_file_name: str | None = None
    extent_names: list[str] = field(default_factory=list)  # vmdk extents other than itself

    @property
    def followed(self) -> list[str]:
        """Every other file reading this image reads (real paths)."""
        out = [c.path for c in self.chain]
        if self.data_file:
            out.append(self.data_file)
        return out


def need_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SourceError(f"{name} is not installed (Debian: apt-get install qemu-utils)")
    return found


def image_args(path: str, fmt: str, follow: bool) -> list[str]:
    """How to name an image to a qemu tool: the format always pinned (never a
    probe), and, unless `follow`, with no backing file opened whatever the
    header says (a `json:` name with `"backing": null`)."""
    if follow:
        return ["-f", fmt, os.path.abspath(path)]
    driver = "host_device" if _is_block_device(path) else "file"
    spec: dict[str, object] = {
        "driver": fmt,
        "file": {"driver": driver, "filename": os.path.abspath(path)},
        "backing": None,
    }
    return ["json:" + json.dumps(spec, separators=(",", ":"))]


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def file_identity(path: str) -> str | None:
    """`realpath:size:mtime_ns` of an image file (None if it cannot be
    stat'ed): what a point records as the image it read, so that a later
    backup can tell that file was written since (docs/format.md, lineage)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def backing_chain_identity(info: ImageInfo) -> list[str]:
    """Identities of every file below `info` in its backing chain (top first).

    Writes to a backing file reach neither the top's dirty bitmaps nor an
    overlay's allocation map; a changed identity here tells the trackers so."""
    out: list[str] = []
    for below in info.chain:
        identity = file_identity(below.path)
        if identity is None:
            out.append(f"{below.path}:missing")
            break
        out.append(identity)
    return out


def run_tool(args: Sequence[str], what: str) -> str:
    """Run a qemu tool; SourceError with its last line of stderr on failure."""
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=300, env=child_environment()
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: {args[0]} timed out") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise SourceError(f"{what}: {message[-1] if message else f'exit {done.returncode}'}")
    return done.stdout


def image_info(path: str, fmt: str | None = None, follow: bool = False) -> ImageInfo:
    """What `qemu-img info` (shared mode: works while in use) says of an image
    of format `fmt` (None: what strongroom's own sniff finds, never qemu's guess).

    Only facts: whether the files it names may be opened is decided by
    `sources.images.probe_image`. qemu-img info opens no backing file; with
    `follow` False it is not even told where one would be."""
    fmt = fmt or sniff_format(path)
    args = [need_tool(QEMU_IMG), "info", "-U", "--output=json"]
    out = run_tool([*args, *image_args(path, fmt, follow)], f"{path}: cannot probe")
    doc = json.loads(out)
    specific = (doc.get("format-specific") or {}).get("data") or {}
    bitmaps = [
        BitmapInfo(
            name=str(b["name"]),
            granularity=int(b.get("granularity", 65536)),
            recording="auto" in b.get("flags", []),
            inconsistent="in-use" in b.get("flags", []),
        )
        for b in specific.get("bitmaps", []) or []
    ]
    backing_name = doc.get("backing-filename")
    backing = doc.get("full-backing-filename") or backing_name
    if backing and not os.path.isabs(backing):
        backing = os.path.join(os.path.dirname(os.path.abspath(path)), backing)
    fmt_name = str(doc.get("format", fmt))
    me = os.path.realpath(path)
    extents = [
        str(e.get("filename", ""))
        for e in specific.get("extents", []) or []
        if isinstance(e, dict) and os.path.realpath(str(e.get("filename", ""))) != me
    ]
    data_file_name = specific.get("data-file")
    return ImageInfo(
        path=os.path.abspath(path),
        format=fmt_name,
        virtual_size=int(doc["virtual-size"]),
        backing=os.path.realpath(backing) if backing else None,
        bitmaps=bitmaps,
        plain_clusters=fmt_name in ("qcow2", "raw")
        and not doc.get("encrypted")
        and "data-file" not in specific
        and "encrypt" not in specific,
        follow=follow,
        backing_name=str(backing_name) if backing_name else None,
        data_file_name=str(data_file_name) if data_file_name else None,
        extent_names=extents,
    )


def check_consistency(path: str, fmt: str, follow: bool = False) -> None:
    """SourceError (one line) when `qemu-img check` finds the image damaged:
    corruptions or errors (a truncated qcow2 reads as zeros past its end in
    qemu, so nothing else would notice). Leaked clusters are harmless."""
    args = [need_tool(QEMU_IMG), "check", "-U", "--output=json", *image_args(path, fmt, follow)]
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=600, env=child_environment()
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"{path}: qemu-img check timed out") from None
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        lines = done.stderr.strip().splitlines()
        raise SourceError(f"{path}: cannot check: {lines[-1] if lines else 'no output'}") from None
    bad = int(doc.get("corruptions", 0) or 0) + int(doc.get("check-errors", 0) or 0)
    if bad:
        end = doc.get("image-end-offset")
        size = os.path.getsize(path) if os.path.isfile(path) else None
        hint = " (truncated?)" if end is not None and size is not None and size <= end else ""
        raise SourceError(
            f"{path} is a damaged {fmt} image: qemu-img check finds {bad} errors{hint}"
        )


class OfflineBitmaps:
    """Dirty bitmaps of an image file nobody has open, changed with qemu-img."""

    def __init__(self, path: str, follow: bool = False) -> None:
        self.path = path
        self._image = image_args(path, "qcow2", follow)

    def bitmaps(self) -> list[BitmapInfo]:
        return image_info(self.path, "qcow2", self._image[0] == "-f").bitmaps

    def checkpoint(self, add: str, granularity: int, disable: Iterable[str]) -> None:
        """Start bitmap `add`, then stop the others.

        Offline there is no writer between the two steps (qemu-img holds the
        write lock for each); and the order means a writer that slipped in
        would be recorded by both, never by neither."""
        tool = need_tool(QEMU_IMG)
        what = f"{self.path}: cannot change dirty bitmaps"
        run_tool([tool, "bitmap", "--add", "-g", str(granularity), *self._image, add], what)
        for name in disable:
            run_tool([tool, "bitmap", "--disable", *self._image, name], what)

    def remove(self, names: Iterable[str]) -> None:
        tool = need_tool(QEMU_IMG)
        for name in names:
            run_tool(
                [tool, "bitmap", "--remove", *self._image, name],
                f"{self.path}: cannot remove {name}",
            )
