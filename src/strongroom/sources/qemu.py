"""Disk images that qemu reads: probing, offline dirty bitmaps, a qemu-nbd child.

An image file that is not raw (qcow2, vmdk, vhdx, ...) is served by a private
`qemu-nbd` on a unix socket in a temporary directory and read over NBD; that
same child exposes the image's persistent dirty bitmaps (`-B`) and the
allocation depth of its top layer (`-A`) for the change trackers.

Offline bitmap changes go through `qemu-img bitmap`, which takes the image's
write lock: while a VM or a storage daemon holds the image, they fail with a
clear message, and a running disk is backed up through QMP instead
(`sources/live.py`).
"""

from __future__ import annotations

import bisect
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from strongroom.config import child_environment
from strongroom.errors import SourceError
from strongroom.nbd.uri import format_unix_uri
from strongroom.sources.block import Data, NbdSource
from strongroom.sources.image_refs import sniff_format

QEMU_IMG = "qemu-img"
QEMU_NBD = "qemu-nbd"
_START_TIMEOUT = 20.0


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


def backing_chain_identity(info: ImageInfo) -> list[str]:
    """Identities of every file below `info` in its backing chain (top first).

    Writes to a backing file reach neither the top's dirty bitmaps nor an
    overlay's allocation map; a changed identity here tells the trackers so."""
    out: list[str] = []
    for below in info.chain:
        try:
            st = os.stat(below.path)
        except OSError:
            out.append(f"{below.path}:missing")
            break
        out.append(f"{below.path}:{st.st_size}:{st.st_mtime_ns}")
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


class QemuNbdChild:
    """A private read-only `qemu-nbd` serving one image on a unix socket."""

    def __init__(
        self,
        path: str,
        fmt: str,
        bitmaps: Sequence[str] = (),
        allocation_depth: bool = False,
        writable: bool = False,
        follow: bool = False,
    ) -> None:
        """`follow`: let qemu open the backing file / data file the image names
        (the caller checked them); else it is told `"backing": null`."""
        self.path = path
        tool = need_tool(QEMU_NBD)
        self._dir = tempfile.mkdtemp(prefix="strongroom-nbd-")
        self.socket = os.path.join(self._dir, "nbd.sock")
        args = [tool, "--socket", self.socket, "--persistent"]
        args += ["--shared", "8", "--cache", "writeback"]
        if not writable:
            args.append("--read-only")
        for name in bitmaps:
            args += ["--bitmap", name]
        if allocation_depth:
            args.append("--allocation-depth")
        args += image_args(path, fmt, follow)
        # stderr to a file, not a pipe: nobody reads while it runs, and a full
        # pipe would block qemu-nbd (and the backup with it).
        self._log = os.path.join(self._dir, "qemu-nbd.log")
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=child_environment(),
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        # qemu-nbd creates the socket file before it listens: ready means a
        # connection is accepted.
        while not _accepts(self.socket):
            if self._proc.poll() is not None:
                with open(self._log, "rb") as log:
                    err = log.read().decode(errors="replace")
                self._cleanup()
                lines = err.strip().splitlines()
                raise SourceError(f"{path}: qemu-nbd failed: {lines[-1] if lines else 'no output'}")
            if time.monotonic() > deadline:
                self.close()
                raise SourceError(f"{path}: qemu-nbd did not start")
            time.sleep(0.01)
        self.uri = format_unix_uri(self.socket, "")

    def failure(self) -> str | None:
        """qemu-nbd's last word if it has exited (it may die after listening)."""
        try:
            self._proc.wait(0.5)
        except subprocess.TimeoutExpired:
            return None
        try:
            with open(self._log, "rb") as log:
                lines = log.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"exited with status {self._proc.returncode}"

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when strongroom dies, so no qemu-nbd outlives a
    killed backup holding the image's lock."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _accepts(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class HostExtent:
    start: int
    length: int
    zero: bool
    depth: int  # 0: the image file itself, 1: its backing file, ...
    offset: int  # in that file (data extents)


class HostMap:
    """Where each guest byte of an uncompressed qcow2 (or raw) chain lies in its files.

    `qemu-img map` reports, for every extent, whether it reads as zeros or
    where in which file of the backing chain its bytes are stored as they are.
    Reading those bytes with pread skips qemu-nbd and the NBD copy for the
    bulk of a backup; metadata (allocation, dirty bitmaps) still comes over
    NBD. Only valid while nothing writes the image: the private qemu-nbd that
    serves it holds qemu's image lock, which keeps writers out."""

    def __init__(self, extents: list[HostExtent], files: list[str]) -> None:
        self.extents = extents
        self.starts = [e.start for e in extents]
        self._fds = [os.open(f, os.O_RDONLY | os.O_CLOEXEC) for f in files]

    @classmethod
    def load(cls, info: ImageInfo) -> HostMap | None:
        """The map, or None when some data is not stored plainly (compressed clusters)."""
        if not info.plain_clusters or (info.backing and not info.chain):
            return None
        if not all(below.plain for below in info.chain):
            return None
        files = [info.path, *(below.path for below in info.chain)]
        out = run_tool(
            [
                need_tool(QEMU_IMG),
                "map",
                "-U",
                "--output=json",
                *image_args(info.path, info.format, info.follow),
            ],
            f"{info.path}: cannot map",
        )
        extents = []
        for e in json.loads(out):
            zero = bool(e.get("zero")) or not e.get("data")
            if not zero and ("offset" not in e or int(e.get("depth", 0)) >= len(files)):
                return None  # compressed, or in a file we did not expect
            extents.append(
                HostExtent(
                    int(e["start"]),
                    int(e["length"]),
                    zero,
                    int(e.get("depth", 0)),
                    int(e.get("offset", 0)),
                )
            )
        return cls(extents, files)

    def read(self, offset: int, length: int) -> tuple[bytearray, int]:
        """The guest bytes [offset, offset+length), and how many came from files."""
        buf = bytearray(length)
        view = memoryview(buf)
        got = 0
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        pos, end = offset, offset + length
        while pos < end and i < len(self.extents):
            ext = self.extents[i]
            stop = min(end, ext.start + ext.length)
            if stop > pos and not ext.zero:
                piece = view[pos - offset : stop - offset]
                n = os.preadv(self._fds[ext.depth], [piece], ext.offset + (pos - ext.start))
                if n != len(piece):
                    raise SourceError(f"image file ended early at guest offset {pos}")
                got += n
            pos = max(pos, stop)
            i += 1
        return buf, got

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


class QemuImageSource(NbdSource):
    """An image file in any format qemu reads, through a private qemu-nbd."""

    def __init__(
        self,
        info: ImageInfo,
        bitmaps: Sequence[str] = (),
        allocation_depth: bool = False,
    ) -> None:
        self.info = info
        self.child = QemuNbdChild(
            info.path, info.format, bitmaps, allocation_depth, follow=info.follow
        )
        contexts = [f"qemu:dirty-bitmap:{b}" for b in bitmaps]
        if allocation_depth:
            contexts.append("qemu:allocation-depth")
        try:
            super().__init__(self.child.uri, contexts, description=info.path)
            # Mapped while qemu-nbd holds the image: nobody writes meanwhile.
            self.host_map = HostMap.load(info)
        except SourceError:
            why = self.child.failure()
            self.child.close()
            if why is not None:
                raise SourceError(f"{info.path}: qemu-nbd failed: {why}") from None
            raise
        except BaseException:
            self.child.close()
            raise
        self._direct = 0

    @property
    def bytes_read(self) -> int:
        return super().bytes_read + self._direct

    def read_blocks(self, ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Data]]:
        host_map = self.host_map
        if host_map is None:
            yield from super().read_blocks(ranges)
            return
        for offset, length in ranges:
            try:
                data, got = host_map.read(offset, length)
            except OSError as err:
                raise SourceError(
                    f"{self.description}: read error at offset {offset}: {err.strerror}"
                ) from None
            self._direct += got
            yield offset, data

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.host_map is not None:
                self.host_map.close()
            self.child.close()
