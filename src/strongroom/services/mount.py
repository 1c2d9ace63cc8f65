"""`strongroom mount`: the repository as a read-only file system, until unmounted.

Checked before anything mounts, each as one line: the mount point is an
existing empty folder, FUSE is usable here (/dev/fuse and libfuse 3, through
mfusepy, imported only now so no other command pays for it), and the points
load. New points appear within seconds (`mount_view` gives the layout and
how it refreshes); reads go through the repository with the usual verification.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

from strongroom.errors import StrongroomError, UsageError
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.services.points import PointFilter, list_points


class FuseUnavailable(StrongroomError):
    """FUSE cannot be used on this machine (no /dev/fuse, no libfuse 3, no mfusepy)."""


def check_mountpoint(path: str) -> None:
    """UsageError unless `path` is an existing, empty folder."""
    shown = printable(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        raise UsageError(
            f"mount point {shown} does not exist: create an empty folder first"
        ) from None
    except OSError as err:
        if err.errno == errno.ENOTCONN:  # a FUSE mount whose process died
            raise UsageError(
                f"mount point {shown} is a dead mount: run 'fusermount3 -u {shown}' first"
            ) from None
        raise UsageError(f"mount point {shown} cannot be used ({err.strerror})") from None
    if not os.path.isdir(path):
        raise UsageError(f"mount point {shown} is not a folder")
    try:
        if os.listdir(path):
            raise UsageError(f"mount point {shown} is not empty")
    except PermissionError:
        raise UsageError(f"mount point {shown} cannot be read") from None


def _load_fuse() -> Callable[..., None]:
    """`run_fuse`, or FuseUnavailable naming what is missing."""
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable("FUSE is not available here (/dev/fuse is missing)")
    try:
        from strongroom.services.mount_fuse import run_fuse
    except ImportError:
        raise FuseUnavailable(
            "FUSE is not available here: install the Python package mfusepy"
        ) from None
    except OSError as err:  # mfusepy: libfuse not found
        raise FuseUnavailable(
            f"FUSE is not available here: libfuse 3 cannot be loaded ({err}); "
            "install fuse3 (Debian: apt-get install fuse3)"
        ) from None
    return run_fuse


def mount_repository(
    repo: Repository,
    mountpoint: str,
    flt: PointFilter,
    *,
    allow_other: bool = False,
    owner_root: bool = False,
    on_ready: Callable[[int], None] = lambda count: None,
) -> None:
    """Serve the points matching `flt` at `mountpoint` until it is unmounted
    (fusermount3 -u, or SIGINT/SIGTERM/SIGHUP to this process); returns then.
    `on_ready(number of points)` runs once the file system is mounted."""
    shown: list[RecoveryPoint] = []
    mount_store(
        repo,
        mountpoint,
        lambda: list_points(repo, flt, known={p.id: p for p in shown}),
        refresh_index=repo.refresh_index,
        allow_other=allow_other,
        owner_root=owner_root,
        on_ready=on_ready,
        shown=shown,
    )


def mount_store(
    store: ChunkStore,
    mountpoint: str,
    points: Callable[[], list[RecoveryPoint]],
    *,
    refresh_index: Callable[[], object] | None = None,
    allow_other: bool = False,
    owner_root: bool = False,
    on_ready: Callable[[int], None] = lambda count: None,
    shown: list[RecoveryPoint] | None = None,
) -> None:
    """`mount_repository` over any store the file pipelines read (a local
    repository, or an agent's view of the backup server: `points` lists the
    machine's own); `points()` is asked again as the layout refreshes, and
    `shown`, if given, is kept equal to the points on display."""
    check_mountpoint(mountpoint)
    run_fuse = _load_fuse()
    from strongroom.services.mount_view import RepositoryView

    first = points()
    if shown is not None:
        shown[:] = first
    uid, gid = (0, 0) if owner_root else (os.getuid(), os.getgid())

    def reload() -> list[RecoveryPoint]:
        found = points()
        if shown is not None:
            shown[:] = found
        return found

    view = RepositoryView(
        store,
        first,
        uid=uid,
        gid=gid,
        now_ns=time.time_ns(),
        reload=reload,
        refresh_index=refresh_index,
    )
    try:
        run_fuse(
            view,
            os.path.abspath(mountpoint),
            allow_other=allow_other,
            on_mounted=lambda: on_ready(len(first)),
        )
    except RuntimeError as err:
        raise FuseUnavailable(f"mounting {printable(mountpoint)} failed ({err})") from None
    finally:
        view.close()
