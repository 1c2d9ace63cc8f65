"""Helpers for the VHD tests: expected raw images, and the tools that judge our files.

Tools and their packages: qemu-img (Debian qemu-utils), vhdiinfo (Debian
libvhdi-utils), pyvhdi (PyPI libvhdi-python).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from strongroom.formats.vhd import ParentInfo, VhdInfo, Zeros, write_vhd
from strongroom.formats.vhd.writer import Data

KiB = 1 << 10
MiB = 1 << 20
# Not a multiple of the block size, nor of a CHS geometry: qemu must not round it.
SIZE = 9 * MiB + 12 * KiB
Extents = Sequence[tuple[int, Data]]


def need(*tools: str) -> None:
    """Skip the calling test unless every tool is installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def noise(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def apply(image: bytearray, extents: Iterable[tuple[int, Data]]) -> None:
    """What the disk holds after `extents` are written over `image`."""
    for offset, data in extents:
        if isinstance(data, Zeros):
            image[offset : offset + data.length] = bytes(data.length)
        else:
            image[offset : offset + len(data)] = data


def write(path: Path, size: int, extents: Extents, **kw: Any) -> VhdInfo:
    with open(path, "wb") as f:
        return write_vhd(f, size, extents, **kw)


def write_child(path: Path, parent: Path, size: int, extents: Extents) -> VhdInfo:
    info = ParentInfo.from_file(parent, path)
    return write(path, size, extents, kind="differencing", parent=info)


def run(*args: str | Path) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{args[0]} failed: {proc.stdout}{proc.stderr}"
    return proc.stdout


# A base disk: data in blocks 0, 1 and 4 (the last, partial block), block 2 and 3 holes.
BASE: list[tuple[int, Data]] = [
    (0, noise(1, 64 * KiB)),
    (1 * MiB, noise(2, 3 * MiB)),  # spans blocks 0 and 1
    (8 * MiB + 4 * KiB, noise(3, SIZE - 8 * MiB - 4 * KiB)),
]
# A child over BASE: whole and partial blocks, zeros over the parent's data,
# data where the parent has a hole. 4 KiB-aligned (see test_tools.py for why).
CHILD: list[tuple[int, Data]] = [
    (8 * KiB, noise(4, 8 * KiB)),  # partial, inside parent data
    (40 * KiB, Zeros(16 * KiB)),  # zeros over parent data
    (2 * MiB, Zeros(2 * MiB)),  # a whole block of zeros over parent data
    (4 * MiB + 12 * KiB, noise(5, 4 * KiB)),  # where the parent has a hole
    (6 * MiB, noise(6, 2 * MiB)),  # a whole block
    (SIZE - 4 * KiB, noise(7, 4 * KiB)),  # the very end of the disk
]
# A grandchild with sector-sized (sub-4 KiB) writes.
GRANDCHILD: list[tuple[int, Data]] = [
    (512, noise(8, 512)),
    (3 * KiB, Zeros(1536)),
    (2 * MiB + 512, noise(9, 1024)),
]


def expected(*layers: Extents, size: int = SIZE) -> bytes:
    image = bytearray(size)
    for layer in layers:
        apply(image, layer)
    return bytes(image)
