"""Use cases on block points: restore, serve over NBD, browse the files inside.

`restore_overlay` is the scoped restore of a point that builds on a golden
image (a BLOCK seed): a qcow2 overlay whose backing file is the golden image
and which holds only the point's own blocks (services/image_seeds.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from strongroom.errors import UsageError
from strongroom.model.blockmap import BlockMap
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.nbd.limits import DEFAULT_CLIENT_TIMEOUT as DEFAULT_CLIENT_TIMEOUT
from strongroom.nbd.limits import DEFAULT_MAX_CLIENTS as DEFAULT_MAX_CLIENTS
from strongroom.nbd.server import NbdServer
from strongroom.nbd.server import ServerLimits as ServerLimits  # serving()'s bounds
from strongroom.nbd.uri import format_tcp_uri, format_unix_uri, parse_nbd_uri
from strongroom.pipeline.blockmaps import load_block_map, load_vm_manifest
from strongroom.pipeline.image_reader import PointReader
from strongroom.pipeline.image_restore import ImageRestore, ImageRestoreSummary
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.image_seeds import (
    differing_blocks,
    seed_map,
    seed_of_point,
    verify_golden,
)
from strongroom.services.seeds import SeedRepository
from strongroom.sources.block_targets import Qcow2Target, open_target
from strongroom.sources.image_refs import ImageReferenceError
from strongroom.sources.images import open_image, probe_image
from strongroom.types import ProgressCallback, no_progress


def require_block(point: RecoveryPoint) -> None:
    if point.kind != PointKind.BLOCK:
        raise UsageError(f"point {point.short_id} is a {point.kind} point, not a block image")


def point_map(repo: ChunkStore, point: RecoveryPoint) -> BlockMap:
    require_block(point)
    return load_block_map(repo, bytes.fromhex(point.tree))


def restore_image(
    repo: ChunkStore,
    point: RecoveryPoint,
    target: str,
    fmt: str = "raw",
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageRestoreSummary:
    return restore_map(repo, point_map(repo, point), target, fmt, progress, cancel)


def restore_map(
    repo: ChunkStore,
    block_map: BlockMap,
    target: str,
    fmt: str = "raw",
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageRestoreSummary:
    """Write one disk's map to `target` (a file, a block device, an NBD URI)."""
    out = open_target(target, block_map.size, fmt)
    try:
        return ImageRestore(repo, block_map, out, progress=progress, cancel=cancel).run()
    except BaseException:
        try:  # release it (a qemu-nbd child, a descriptor); the error is what matters
            out.close()
        except Exception:
            pass
        raise


def restore_overlay(
    repo: ChunkStore,
    point: RecoveryPoint,
    backing: str,
    target: str,
    *,
    seeds: SeedRepository,
    verify_full: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> ImageRestoreSummary:
    """Write `target` as a qcow2 overlay on `backing` (the golden image of the
    seed the point builds on: checked first, by size and content, on a sample
    or fully) holding only the blocks where the point differs from the seed:
    its own data, and explicit zeros where it has a hole and the seed data.
    `seeds`: where the seed is read (the repository, or the server's seeds as
    an agent reads them)."""
    block_map = point_map(repo, point)
    seed = seed_of_point(seeds, point.seeds, f"point {point.short_id}")
    base = seed_map(seeds, seed)
    only = differing_blocks(block_map, base)
    try:  # strongroom's sniff; the files it names are not read
        info = probe_image(backing)
    except ImageReferenceError:  # its advice (--allow-backing) is backup's, not restore's
        raise UsageError(
            f"--backing {backing} names other files (a backing file or parent): give the"
            " golden image as one raw or qcow2 file (qemu-img convert flattens a chain)"
        ) from None
    if info.format not in ("raw", "qcow2"):
        raise UsageError(f"--backing {backing} is a {info.format} image: give a raw or qcow2 image")
    if os.path.abspath(target) == info.path or (
        os.path.exists(target) and os.path.samefile(target, info.path)
    ):
        raise UsageError(f"--target {target} is the golden image: write the overlay elsewhere")
    golden = open_image(info)
    try:
        verify_golden(seeds, golden, seed, base, full=verify_full, what=backing)
    finally:
        golden.close()
    # Written under a temporary name and renamed when complete: a half-written
    # overlay is a valid qcow2 whose missing blocks read from the golden image,
    # a wrong disk that looks right, so it must never stand under `target`.
    folder, name = os.path.split(os.path.abspath(target))
    partial = os.path.join(folder, f".{name}.partial-{os.getpid()}")
    out = Qcow2Target(partial, block_map.size, backing=(info.path, info.format))
    try:
        summary = ImageRestore(
            repo, block_map, out, progress=progress, cancel=cancel, only=only
        ).run()
        os.replace(partial, target)
    except BaseException:
        try:
            out.close()
        except Exception:
            pass
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return summary


@dataclass
class PointExport:
    """A recovery point as a read-only NBD export (the server's Export protocol)."""

    name: str
    reader: PointReader
    description: str

    @property
    def size(self) -> int:
        return self.reader.size

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.read(offset, length)

    def extents(self, offset: int, length: int) -> Iterator[tuple[int, int, bool]]:
        return self.reader.extents(offset, length)


@dataclass
class Served:
    """One export of a running `serving` block: its name, URI and size."""

    name: str
    uri: str
    size: int


def _served_maps(repo: Repository, point: RecoveryPoint, name: str) -> list[tuple[str, BlockMap]]:
    """(export name, map) of every disk of the point: a VM point's disks are
    exported under their names, an image point under `name`."""
    if point.kind == PointKind.VM:
        manifest = load_vm_manifest(repo, bytes.fromhex(point.tree))
        return [(d.name, load_block_map(repo, bytes.fromhex(d.map_root))) for d in manifest.disks]
    return [(name, point_map(repo, point))]


@contextmanager
def serving(
    repo: Repository,
    point: RecoveryPoint,
    *,
    socket_path: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    name: str = "",
    limits: ServerLimits | None = None,
) -> Iterator[tuple[NbdServer, list[Served]]]:
    """Serve a point (every disk of a VM point) until the block exits; yields the
    server and its exports. Loopback only; `limits` bound what clients may hold
    (connections, requests in flight, timeouts; see `ServerLimits`)."""
    if socket_path is None and port is None:
        raise UsageError("serve needs --socket PATH or --port N")
    if port is not None and host not in ("127.0.0.1", "::1", "localhost"):
        raise UsageError("serve listens on loopback only (the export is not authenticated)")
    readers: dict[str, PointReader] = {}
    try:
        for export_name, block_map in _served_maps(repo, point, name):
            readers[export_name] = PointReader(repo, block_map)
        exports = {
            n: PointExport(n, r, f"strongroom point {point.short_id} {n}".rstrip())
            for n, r in readers.items()
        }
        first = next(iter(exports))
        server = NbdServer(exports, default_export=first, limits=limits)
        try:
            if socket_path:
                server.listen_unix(socket_path)
                uris = [format_unix_uri(socket_path, n) for n in exports]
            else:
                base = parse_nbd_uri(server.listen_tcp(host, port or 0))
                uris = [format_tcp_uri(host, base.port, n) for n in exports]
            yield (
                server,
                [Served(n, u, readers[n].size) for n, u in zip(exports, uris, strict=True)],
            )
        finally:
            server.shutdown()
    finally:
        for reader in readers.values():
            reader.close()
