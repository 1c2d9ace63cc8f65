"""Small disk and file-system images built with the real tools, and the trees put in them.

Shared by the partition-table tests and the image-file tests. Tools and their
Debian packages: mke2fs/e2fsck/debugfs (e2fsprogs), mkfs.fat (dosfstools),
mcopy/mmd/mdel/mattrib (mtools), sfdisk (fdisk), dd (coreutils).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MiB = 1 << 20
PACKAGES = {
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
}
# Whole seconds: FAT keeps 2-second steps, `mke2fs -d` drops nanoseconds.
OLD = 1_583_298_368  # 2020-03-04, an even second


def need(*tools: str) -> None:
    """Skip the calling test unless every tool is installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        packages = sorted({PACKAGES.get(t, t) for t in missing})
        pytest.skip(f"needs {', '.join(missing)} (apt-get install {' '.join(packages)})")


def run(*args: str | Path, input: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
    """Run a tool; on failure the assertion shows its stderr."""
    proc = subprocess.run(
        [str(a) for a in args], input=input, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode in ok, f"{args[0]} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def _write(path: Path, data: bytes, mtime: int, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, (mtime, mtime))


def ext_tree(root: Path, many: int = 2000) -> Path:
    """Sizes around block edges, a 40-extent file, holes, modes, symlinks, unicode, a big dir."""
    rnd = random.Random(7)
    _write(root / "empty", b"", OLD)
    _write(root / "one", b"1", OLD + 2)
    for size in (1023, 1024, 1025, 4095, 4096, 4097):
        _write(root / "sizes" / f"s{size}", rnd.randbytes(size), OLD + size)
    _write(root / "medium.bin", rnd.randbytes(MiB + 3), OLD + 10)
    _write(root / "big.bin", rnd.randbytes(3 * MiB), OLD + 12)
    with open(root / "fragmented.bin", "wb") as out:  # 40 islands: an extent tree of depth 1
        for island in range(40):
            out.seek(island * 64 * 1024)
            out.write(rnd.randbytes(4096))
    os.utime(root / "fragmented.bin", (OLD + 14, OLD + 14))
    with open(root / "sparse.bin", "wb") as out:
        out.seek(5 * MiB)
        out.write(b"tail")
    os.utime(root / "sparse.bin", (OLD + 16, OLD + 16))
    _write(root / "exec.sh", b"#!/bin/sh\necho hi\n", OLD + 18, 0o755)
    _write(root / "secret", b"psst", OLD + 20, 0o600)
    _write(root / "setuid", b"s", OLD + 22, 0o4755)
    _write(root / "a" / "b" / "c" / "deep.txt", b"deep\n", OLD + 24)
    _write(root / "ünïcødé ñame.txt", "ü".encode(), OLD + 26)
    _write(root / "日本語" / "ファイル.txt", "日本".encode(), OLD + 28)
    for name, target in (
        ("link", "a/b/c/deep.txt"),
        ("abs", "/etc/hostname"),
        ("dangling", "nope"),
        ("longlink", "x" * 100 + "/" + "y" * 100),  # too long for the inode: a block
    ):
        os.symlink(target, root / name)
        os.utime(root / name, (OLD + 30, OLD + 30), follow_symlinks=False)
    for index in range(many):
        _write(root / "many" / f"f{index:04d}", f"{index}\n".encode(), OLD + 32)
    os.mkfifo(root / "fifo")
    for directory in sorted(root.rglob("*"), reverse=True):
        if directory.is_dir() and not directory.is_symlink():
            os.utime(directory, (OLD + 40, OLD + 40))
    return root


def fat_tree(root: Path) -> Path:
    """Long names, 8.3 names in lower and upper case, a multi-cluster directory, sizes."""
    rnd = random.Random(8)
    _write(root / "Long File Name ü.txt", b"long\n", OLD)
    _write(root / "lower.txt", b"lower\n", OLD + 2)
    _write(root / "UPPER.TXT", b"UPPER\n", OLD + 4)
    _write(root / "MiXeD.TxT", b"mixed\n", OLD + 6)
    _write(root / "empty.txt", b"", OLD + 8)
    _write(root / "big.bin", rnd.randbytes(300_000), OLD + 10)
    _write(root / "dir" / "sub" / "deep.txt", b"deep\n", OLD + 12)
    for index in range(300):
        _write(root / "dir" / "many" / f"file{index:03d}.txt", f"{index}\n".encode(), OLD + 14)
    for directory in sorted(root.rglob("*"), reverse=True):
        if directory.is_dir():
            os.utime(directory, (OLD + 20, OLD + 20))
    return root


def make_ext(image: Path, source: Path, kind: str = "ext4", size: str = "64M") -> Path:
    """`mke2fs -d`, then `e2fsck -fyD` so that large directories get htree indexes."""
    need("mke2fs", "e2fsck")
    run("mke2fs", "-q", "-F", "-t", kind, "-d", source, image, size)
    run("e2fsck", "-fyD", image, ok=(0, 1))
    return image


def make_fat(image: Path, source: Path, bits: int, size_mib: int, *options: str) -> Path:
    need("mkfs.fat", "mcopy")
    with open(image, "wb") as out:
        out.truncate(size_mib * MiB)
    run("mkfs.fat", "-F", str(bits), *options, image)
    entries = [str(p) for p in sorted(source.iterdir())]
    run("mcopy", "-s", "-m", "-i", image, *entries, "::/")
    return image


def sfdisk(disk: Path, script: str, *options: str) -> dict[str, Any]:
    """Write a partition table with sfdisk; returns `sfdisk --json` of the result."""
    need("sfdisk")
    run("sfdisk", "-q", *options, disk, input=script)
    table: dict[str, Any] = json.loads(run("sfdisk", "--json", *options, disk))["partitiontable"]
    return table


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        out.truncate(size)
    return path


def place(disk: Path, image: Path, offset: int) -> None:
    """Copy a file system into a disk at a byte offset, as `dd conv=notrunc` does."""
    run("dd", f"if={image}", f"of={disk}", "bs=1M", f"seek={offset}", "oflag=seek_bytes",
        "conv=notrunc", "status=none")  # fmt: skip


@dataclass(frozen=True)
class Local:
    """What a local tree holds at one path, in the terms of `ImageEntry`."""

    type: str
    size: int
    mode: int
    mtime: int
    target: str = ""
    digest: str = ""


def snapshot(root: Path) -> dict[str, Local]:
    """Every entry below `root` keyed by its absolute path inside the tree."""
    found: dict[str, Local] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        key = "/" + path.relative_to(root).as_posix()
        mode, mtime = info.st_mode & 0o7777, int(info.st_mtime)
        if path.is_symlink():
            found[key] = Local("symlink", 0, mode, mtime, os.readlink(path))
        elif path.is_dir():
            found[key] = Local("dir", 0, mode, mtime)
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[key] = Local("file", info.st_size, mode, mtime, digest=digest)
        else:
            found[key] = Local("other", 0, mode, mtime)
    return found


def digest_of(stream: io.BufferedIOBase | Any) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(256 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


class CountingDisk(io.RawIOBase):
    """A read-only disk file that counts the bytes read from it and can be made to fail."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.bytes_read = 0
        self.fail_with: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer: Any) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        count = self._file.readinto(buffer)
        self.bytes_read += count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()
