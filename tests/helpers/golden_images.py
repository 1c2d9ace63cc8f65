"""Golden disk images for the image seed tests: ext4 file systems made with
`mke2fs -d` from a golden tree and from a machine tree (the golden tree plus
a machine's own changes), and block-level facts about two images that the
tests hold strongroom's numbers to.

`mke2fs` is made deterministic (one UUID, one directory hash seed, one fake
clock), so the two images share every block the machine did not change; the
machine's new files go into a directory that sorts after the golden ones, so
that mke2fs lays them out after the golden files instead of shifting those.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.images import MiB, run

IMAGE_SIZE = 64 * MiB
REPO_BS = 1 * MiB  # the repository's block size (repository/format.py DEFAULT_BLOCK_SIZE)
_UUID = "2f3b0f5e-0000-4000-8000-000000000001"
_HASH_SEED = "2f3b0f5e-0000-4000-8000-000000000002"


def golden_tree(root: Path, seed: int = 1) -> Path:
    """An OS-like tree: 60 files of 4 KiB..600 KiB in etc, usr/bin, usr/lib."""
    rnd = random.Random(seed)
    for i in range(60):
        folder = root / ("etc", "usr/bin", "usr/lib")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:03d}").write_bytes(rnd.randbytes(rnd.randint(4096, 600_000)))
    return root


def machine_tree(golden: Path, root: Path) -> Path:
    """The golden tree plus a machine's changes: user files added (under var/),
    one configuration file changed in place (same size)."""
    shutil.copytree(golden, root, symlinks=True)
    rnd = random.Random(2)
    home = root / "var" / "home" / "user"
    home.mkdir(parents=True)
    for i in range(4):
        (home / f"doc{i}").write_bytes(rnd.randbytes(400_000))
    config = root / "etc" / "f000"
    data = bytearray(config.read_bytes())
    data[100:200] = rnd.randbytes(100)
    config.write_bytes(bytes(data))
    return root


def ext4_image(tree: Path, image: Path, size: int = IMAGE_SIZE) -> Path:
    """`mke2fs -t ext4 -d TREE`, the same bytes for the same tree every time."""
    env_time = os.environ.get("E2FSPROGS_FAKE_TIME")
    os.environ["E2FSPROGS_FAKE_TIME"] = "1700000000"
    try:
        run(
            "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-U", _UUID,
            "-E", f"hash_seed={_HASH_SEED},root_owner=0:0", "-d", tree, image,
            str(size // 1024) + "k",
        )  # fmt: skip
    finally:
        if env_time is None:
            del os.environ["E2FSPROGS_FAKE_TIME"]
        else:
            os.environ["E2FSPROGS_FAKE_TIME"] = env_time
    return image


@dataclass
class Pair:
    golden: Path
    machine: Path


def make_pair(tmp: Path) -> Pair:
    golden = golden_tree(tmp / "golden-tree")
    machine = machine_tree(golden, tmp / "machine-tree")
    return Pair(ext4_image(golden, tmp / "golden.img"), ext4_image(machine, tmp / "machine.img"))


def blocks(path: Path, bs: int = REPO_BS) -> list[bytes]:
    data = path.read_bytes()
    return [data[o : o + bs] for o in range(0, len(data), bs)]


def is_zero(block: bytes) -> bool:
    return not any(block)


@dataclass
class Difference:
    """Block-level comparison of a machine image with its golden image."""

    identical: int  # data blocks equal at the same address
    own: list[int]  # data blocks that differ (the golden had other data or zeros)
    zeroed: list[int]  # zero blocks where the golden had data
    new_contents: int  # distinct own contents found nowhere in the golden image

    @property
    def differing(self) -> list[int]:
        return sorted(self.own + self.zeroed)


def difference(golden: Path, machine: Path, bs: int = REPO_BS) -> Difference:
    g, m = blocks(golden, bs), blocks(machine, bs)
    assert len(g) == len(m)
    known = {hashlib.sha256(b).digest() for b in g}
    identical, own, zeroed, new = 0, [], [], set()
    for i, (a, b) in enumerate(zip(g, m, strict=True)):
        if a == b:
            identical += not is_zero(b)
        elif is_zero(b):
            zeroed.append(i)
        else:
            own.append(i)
            digest = hashlib.sha256(b).digest()
            if digest not in known:
                new.add(digest)
    return Difference(identical, own, zeroed, len(new))
