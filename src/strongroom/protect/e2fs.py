"""The e2fsprogs tools that build and edit the metadata disk's file system.

`mke2fs -d` writes the first state straight from the source tree; `debugfs -w
-f SCRIPT` applies a cycle's edits in one process; `-z UNDO` makes each run
record the old contents of every block it writes, which is both the list of
changed blocks (formats/e2undo.py) and the way back (`e2undo`) when a cycle
fails half way. debugfs exits 0 even when commands fail, so its error output
is read: any line that is not its banner is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence

from strongroom.config import child_environment
from strongroom.errors import StrongroomError
from strongroom.formats.e2undo import UndoFileError, read_undo_log

FS_BLOCK = 4096
_BANNER = re.compile(rb"^(debugfs|e2undo|mke2fs) \d+\.\d+")
_FULL = (b"Could not allocate", b"No free space", b"Could not allocate inode")


class MirrorError(StrongroomError):
    """The metadata disk's file system could not be built or changed."""


class MirrorFull(MirrorError):
    """The metadata disk's file system ran out of blocks or inodes."""


def _tool(name: str) -> str:
    for folder in (None, "/usr/sbin", "/sbin"):
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise MirrorError(f"{name} not found: install e2fsprogs (1.43 or newer)")


def _run(argv: Sequence[str], what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            env=child_environment({"LC_ALL": "C", "E2FSPROGS_UNDO_DIR": "/nonexistent"}),
            check=False,
        )
    except OSError as err:
        raise MirrorError(f"{what}: cannot run {argv[0]}: {err.strerror}") from None


def _errors(stderr: bytes) -> list[str]:
    return [
        line.decode(errors="replace").strip()
        for line in stderr.splitlines()
        if line.strip() and not _BANNER.match(line)
    ]


def make_filesystem(
    image: str,
    size: int,
    source: str | None,
    *,
    inodes: int | None = None,
    owner: tuple[int, int] | None = None,
    label: str = "strongroom",
) -> None:
    """Create an ext4 file system of `size` bytes at the start of `image`,
    holding a copy of the tree at `source` (owners, modes, times, links,
    xattrs), or empty with its root owned by `owner`."""
    if owner is None:
        st = os.stat(source or "/")
        owner = (st.st_uid, st.st_gid)
    argv = [
        _tool("mke2fs"),
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        str(FS_BLOCK),
        "-m",
        "0",
        "-L",
        label[:16],
        "-E",
        f"nodiscard,root_owner={owner[0]}:{owner[1]}",
        *(["-d", source] if source else []),
    ]
    if inodes:
        argv += ["-N", str(inodes)]
    argv += [image, str(size // FS_BLOCK)]
    done = _run(argv, "creating the metadata disk")
    if done.returncode != 0:
        message = " ".join(_errors(done.stderr)) or f"exit status {done.returncode}"
        if any(marker in done.stderr for marker in _FULL):
            raise MirrorFull(f"the metadata disk is too small for {source}: {message}")
        raise MirrorError(f"mke2fs failed on {source}: {message}")


def run_debugfs(image: str, script: str, undo: str | None) -> None:
    """Apply the commands in `script` to `image`, recording an undo file at `undo`."""
    argv = [_tool("debugfs"), "-w"]
    if undo is not None:
        if os.path.exists(undo):
            os.unlink(undo)
        argv += ["-z", undo]
    done = _run([*argv, "-f", script, image], "editing")
    problems = _errors(done.stderr)
    if done.returncode != 0 or problems:
        first = problems[0] if problems else f"exit status {done.returncode}"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        if any(marker in done.stderr for marker in _FULL):
            raise MirrorFull(f"the metadata disk is full: {first}{more}")
        raise MirrorError(f"debugfs: {first}{more}")


def roll_back(image: str, undo: str) -> None:
    """Undo a (possibly interrupted) debugfs run recorded in `undo`.

    A finished undo file restores the disk byte for byte. One that debugfs
    left unfinished (it was killed) needs `e2undo -f`, which restores every
    block it recorded but marks the file system not clean: `e2fsck -fy` then
    checks it and marks it clean again, so no cycle ships a dirty state."""
    try:
        log = read_undo_log(undo)
    except UndoFileError:
        log = None  # damaged or cut short: e2undo -f knows best what it can use
    if log is not None and not log.extents:
        os.unlink(undo)  # the run wrote nothing
        return
    forced = log is None or not log.finished
    argv = [_tool("e2undo"), *(["-f"] if forced else []), undo, image]
    done = _run(argv, "rolling back")
    if done.returncode != 0:
        message = " ".join(_errors(done.stderr)) or f"exit status {done.returncode}"
        raise MirrorError(f"e2undo could not roll the metadata disk back: {message}")
    if forced:
        fixed = _run([_tool("e2fsck"), "-fy", image], "checking after a forced roll-back")
        if fixed.returncode not in (0, 1):
            raise MirrorError(
                f"the metadata disk needs repair after an interrupted cycle "
                f"(e2fsck exit {fixed.returncode}); remove the state folder to start a new chain"
            )
    os.unlink(undo)


def check_filesystem(image: str) -> tuple[bool, str]:
    """`e2fsck -fn`: (clean, report)."""
    done = _run([_tool("e2fsck"), "-fn", image], "checking")
    return done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")
