"""Result checks: is what a tool produced the same as what it was given?

Run after the timed command, never timed. A tree restored by a file backup tool is compared
entry by entry (kind, size, symlink target) and file by file (content); a disk image restored,
exported or served is compared with ``qemu-img compare`` (holes and zeros equal, any format).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.workspace import MIB


def tree_entries(root: Path) -> dict[str, tuple[str, object]]:
    """rel path -> (kind, detail): files with their size, symlinks with their target."""
    entries: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                entries[rel] = ("symlink", os.readlink(path))
            elif os.path.isdir(path):
                entries[rel] = ("dir", None)
            else:
                entries[rel] = ("file", st.st_size)
    return entries


def same_content(a: Path, b: Path, block: int = MIB) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(block), fb.read(block)
            if ca != cb:
                return False
            if not ca:
                return True


def compare_trees(expected: Path, actual: Path) -> tuple[list[str], int]:
    """(problems, files whose mtime differs): problems make the restore a failure."""
    want, got = tree_entries(expected), tree_entries(actual)
    problems = [f"missing: {rel}" for rel in sorted(want.keys() - got.keys())]
    problems += [f"unexpected: {rel}" for rel in sorted(got.keys() - want.keys())]
    mtime_diffs = 0
    for rel in sorted(want.keys() & got.keys()):
        if want[rel] != got[rel]:
            problems.append(f"differs: {rel}: {want[rel]} != {got[rel]}")
        elif want[rel][0] == "file":
            if not same_content(expected / rel, actual / rel):
                problems.append(f"content differs: {rel}")
            elif os.lstat(expected / rel).st_mtime_ns != os.lstat(actual / rel).st_mtime_ns:
                mtime_diffs += 1
    return problems, mtime_diffs


def find_restored_root(target: Path, data: Path) -> Path | None:
    """Where the tool put ``data`` under ``target`` (restic and borg recreate the full path)."""
    candidate = target / data.relative_to(data.anchor)
    if candidate.is_dir():
        return candidate
    wanted = set(os.listdir(data))
    queue = [target]
    while queue:
        here = queue.pop(0)
        try:
            names = set(os.listdir(here))
        except OSError:
            continue
        if names == wanted:
            return here
        if len(here.relative_to(target).parts) < len(data.parts) + 2:
            queue += sorted(here / n for n in names if (here / n).is_dir())
    return None


def qemu_img_compare(a: Path, a_fmt: str, b: Path, b_fmt: str) -> str | None:
    """None if the two images hold the same disk, else what ``qemu-img compare`` said."""
    done = subprocess.run(
        ["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, str(a), str(b)],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if done.returncode == 0 else (done.stdout + done.stderr).strip()
