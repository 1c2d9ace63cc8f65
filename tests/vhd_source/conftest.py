"""VHD files for the VHD source and tool tests: written by qemu-img and by
strongroom's own writer, with the raw bytes each must read as."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from strongroom.formats.vhd import ParentInfo, read_footer, write_vhd
from strongroom.formats.vhd.writer import Kind
from tests.helpers.images import KiB, MiB, run, sparse_file, write_random

SIZE = 8 * MiB
ISLANDS = [(0, 256 * KiB), (3 * MiB + 512, 300 * KiB), (SIZE - 64 * KiB, 64 * KiB)]
CHILD_WRITES = [(64 * KiB, 128 * KiB), (5 * MiB, MiB)]

QEMU_IMG = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def raw_disk(path: Path, seed: int = 0) -> Path:
    sparse_file(path, SIZE)
    for i, (offset, length) in enumerate(ISLANDS):
        write_random(path, offset, length, seed=seed + i)
    return path


def qemu_vhd(raw: Path, out: Path, subformat: str) -> Path:
    """`qemu-img convert -O vpc`; qemu rounds the size up to its CHS geometry."""
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", f"subformat={subformat}", raw, out)
    return out


def expected_raw(raw: Path, vhd: Path, out: Path) -> Path:
    """`raw` padded with zeros to the VHD's virtual size."""
    shutil.copy(raw, out)
    os.truncate(out, read_footer(vhd).current_size)
    return out


def own_vhd(raw: Path, out: Path, kind: Kind = "dynamic") -> Path:
    """A VHD of `raw` (its islands as data) written by strongroom's writer."""
    data = raw.read_bytes()
    with open(out, "wb") as f:
        write_vhd(f, len(data), [(o, data[o : o + n]) for o, n in ISLANDS], kind=kind)
    return out


def chain(tmp: Path) -> tuple[Path, Path, Path]:
    """(base.vhd, child.vhd, expected raw): a dynamic base and a differencing child
    whose writes overlay the base's data."""
    base_raw = raw_disk(tmp / "base.raw")
    base = own_vhd(base_raw, tmp / "base.vhd")
    expected = tmp / "chain-expected.raw"
    shutil.copy(base_raw, expected)
    child = tmp / "child.vhd"
    writes = []
    for i, (offset, length) in enumerate(CHILD_WRITES):
        writes.append((offset, write_random(expected, offset, length, seed=50 + i)))
    with open(child, "wb") as f:
        write_vhd(
            f,
            SIZE,
            writes,
            kind="differencing",
            parent=ParentInfo.from_file(base, child),
        )
    return base, child, expected
