"""The continuous-protection benchmarks' shared pieces (bench/cdp.py, bench/cdp_service.py):
the generated trees, the filled files, and a process's CPU and memory from /proc."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from harness.spawn import log
from harness.workspace import KIB, MIB, fresh_dir

TREE_BLOCK = 4 * KIB
DIR_FILES = 100  # files per directory of the generated tree


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process in seconds (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> int | None:
    """Resident set size in bytes (VmRSS), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    except OSError:
        pass
    return None


def fill_file(path: Path, size: int) -> None:
    """``size`` bytes of random data, fsync'd."""
    piece = 4 * MIB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(piece, left)))
            left -= piece
        f.flush()
        os.fsync(f.fileno())


def tree_cache(cache: Path, files: int, seed: int) -> Path:
    """A tree of ``files`` random files of 1 B to 8 KiB, 100 a folder, 10 folders a folder;
    generated once per count and seed and reused (the load keeps its count steady)."""
    root = cache / f"tree-{files}-{seed}"
    marker = cache / f"tree-{files}-{seed}.done"
    if marker.exists() and root.is_dir():
        return root
    log(f"  generating a tree of {files} files in {root}")
    fresh_dir(root)
    rng = random.Random(seed)
    for i in range(files):
        folder = root / f"d{i // (DIR_FILES * 10):04d}" / f"s{i // DIR_FILES % 10}"
        if i % DIR_FILES == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}").write_bytes(rng.randbytes(rng.randint(1, 2 * TREE_BLOCK)))
    os.sync()
    marker.write_text("")
    time.sleep(1.5)  # let ctimes age (files caches treat too-recent timestamps as racy)
    return root
