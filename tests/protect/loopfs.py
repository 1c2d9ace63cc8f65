"""A small ext4 file system on a loop device, for the freeze tests (root only).

`loop_ext4(folder)` makes a sparse image, `mkfs.ext4`, `losetup`, `mount`,
and undoes it all afterwards (thawing first, should a test leave it frozen).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

NEEDS = ("mkfs.ext4", "losetup", "mount", "umount", "fsfreeze")
ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in NEEDS),
    reason="needs root and mkfs.ext4, losetup, mount, fsfreeze",
)


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def loop_ext4(folder: Path, size_mb: int = 64) -> Iterator[Path]:
    """A mounted ext4 at folder/mnt (mode 0755), on a loop device."""
    image, mount = folder / "fs.img", folder / "mnt"
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
    try:
        device = _run("losetup", "-f", "--show", str(image))
    except subprocess.CalledProcessError as err:
        pytest.skip(f"no loop device: {err.stderr.strip()}")
    try:
        mount.mkdir()
        _run("mount", device, str(mount))
        os.chmod(mount, 0o755)
        try:
            yield mount
        finally:
            subprocess.run(["fsfreeze", "-u", str(mount)], capture_output=True, check=False)
            if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
