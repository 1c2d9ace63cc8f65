"""Where a benchmark runs, and the state of the page cache when it does.

Scratch space: ``WORKDIR`` (``--workdir``; default ``/work/bench-scratch``, else ``$TMPDIR`` or
``/var/tmp``) holds one folder per benchmark; tmpfs is refused (it would measure memory, not a
disk). Page cache: caches cannot be dropped reliably here, so every benchmark makes them *warm*
instead: before each timed command it reads what the command will read (sparse files by their
data extents only) and then calls ``sync``, so one command's write-back does not slow the next
one down and the numbers measure the tool, not the disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.spawn import log

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
PIECE = 4 * MIB  # read size when warming


def default_workdir() -> Path:
    if os.access("/work", os.W_OK):
        return Path("/work/bench-scratch")
    return Path(os.environ.get("TMPDIR") or "/var/tmp") / "strongroom-bench"


def filesystem_type(path: Path) -> str:
    """Type of the file system holding ``path`` (longest mount point prefix)."""
    best, fstype = "", "unknown"
    real = os.path.realpath(path)
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, fields[2]
    return fstype


def prepare(workdir: Path | None, name: str, need: float = 0, why: str = "") -> Path:
    """``WORKDIR/name``, created; exits on tmpfs; warns when less than ``need`` bytes are free.

    ``name`` '' means WORKDIR itself."""
    root = (workdir or default_workdir()).resolve()
    base = root / name if name else root
    base.mkdir(parents=True, exist_ok=True)
    fstype = filesystem_type(base)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{root} is on {fstype}: use --workdir on a real disk")
    free = shutil.disk_usage(base).free
    if free < need:
        log(
            f"warning: only {free / GIB:.1f} GiB free in {base}; about {need / GIB:.1f} GiB "
            f"are needed{f' ({why})' if why else ''}"
        )
    return base


def require(tools: Iterable[str], hint: str) -> None:
    """Exit with ``hint`` (how to install) if a tool the scenario cannot do without is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed ({hint})")


def fresh_dir(path: Path) -> Path:
    """``path`` emptied (removed and created again)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def iter_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) for every regular file under ``root``, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                yield os.path.relpath(path, root), st


def tree_bytes(root: Path) -> int:
    """Sum of the sizes of the regular files under ``root`` (a repository's size)."""
    return sum(st.st_size for _, st in iter_files(root)) if root.is_dir() else 0


def file_bytes(path: Path) -> int:
    """Size of a file, or the sum of the sizes of the files under a folder (0 if missing)."""
    if path.is_dir():
        return tree_bytes(path)
    return os.stat(path).st_size if path.exists() else 0


def allocated(path: Path) -> int:
    """Bytes allocated on disk for a file, or for all files under a folder (0 if missing)."""
    if path.is_dir():
        return sum(st.st_blocks * 512 for _, st in iter_files(path))
    return os.stat(path).st_blocks * 512 if path.exists() else 0


def warm_file(path: Path) -> int:
    """Read the data extents of ``path`` (SEEK_DATA/SEEK_HOLE) into the page cache: a sparse
    disk image costs what it holds, not its size. Returns the bytes read."""
    view = memoryview(bytearray(PIECE))
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            while start < end and (n := os.preadv(fd, [view[: end - start]], start)):
                start += n
                total += n
            pos = end
    finally:
        os.close(fd)
    return total


def warm_page_cache(root: Path) -> int:
    """Read every file under ``root`` once (nothing if it does not exist); bytes read."""
    if not root.is_dir():
        return 0
    return sum(warm_file(root / rel) for rel, _ in iter_files(root))


def evict(paths: Iterable[Path]) -> int:
    """Drop the page cache of every regular file under ``paths`` (posix_fadvise
    DONTNEED after a sync: clean pages go, without root and without dropping the
    whole machine's caches), so the next command reads from disk as after a
    reboot. Returns the files evicted."""
    os.sync()
    count = 0
    for path in paths:
        files = (path / rel for rel, _ in iter_files(path)) if path.is_dir() else [path]
        for file in files:
            try:
                fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    count += 1
            finally:
                os.close(fd)
    return count


def warm(paths: Iterable[Path]) -> None:
    """Warm page cache for what the next command reads (files and folders), then flush
    earlier writes (``sync``)."""
    for path in paths:
        if path.is_dir():
            warm_page_cache(path)
        elif path.is_file():
            warm_file(path)
    os.sync()


def fsync_seconds(path: Path) -> float:
    """Time an fsync of ``path``: what a tool that does not fsync its output left to do."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def copy_file(src: Path, dst: Path) -> None:
    """A fresh copy (reflinked where the file system can)."""
    subprocess.run(["cp", "--reflink=auto", str(src), str(dst)], check=True)


def place_data(base: Path, data: Path) -> None:
    """Fresh copy of a cached tree at the benchmarked path."""
    if data.exists():
        shutil.rmtree(data)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(data)], check=True)
    # Let the copy's ctimes age: files caches treat too-recent timestamps as racy.
    time.sleep(1.5)
