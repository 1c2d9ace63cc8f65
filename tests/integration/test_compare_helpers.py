"""The comparison helpers must notice every kind of difference they claim to check:
otherwise the fidelity tests would pass vacuously."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.compare import rsync_differences, walk_differences


def _make(root: Path) -> None:
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"content")
    os.setxattr(root / "d" / "f", "user.a", b"1")
    os.link(root / "d" / "f", root / "d" / "hard")
    (root / "g").write_bytes(b"other")
    os.symlink("g", root / "link")


ATIME, MTIME = 1_000_000_000_000_000_123, 1_600_000_000_000_000_456


def _clone(src: Path, dst: Path) -> None:
    subprocess.run(["rsync", "-aHAX", f"{src}/", f"{dst}/"], check=True)
    for base in (src, dst):
        for rel in ("link", "d/f", "g", "d", "."):
            os.utime(base / rel, ns=(ATIME, MTIME), follow_symlinks=False)


def _same_times(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Apply `change`, then put the times back: only the intended difference remains."""
    change()
    os.utime(path, ns=(ATIME, MTIME))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(
            lambda p: _same_times(p / "g", lambda: (p / "g").write_bytes(b"OTHER")), id="content"
        ),
        pytest.param(lambda p: os.chmod(p / "g", 0o600), id="mode"),
        pytest.param(lambda p: os.setxattr(p / "d" / "f", "user.a", b"2"), id="xattr"),
        pytest.param(lambda p: os.utime(p / "g", ns=(5, MTIME)), id="atime"),
        pytest.param(lambda p: os.utime(p / "g", ns=(ATIME, MTIME + 1)), id="mtime"),
        pytest.param(
            lambda p: os.utime(p / "link", ns=(ATIME, 7), follow_symlinks=False), id="link-mtime"
        ),
        pytest.param(lambda p: _same_times(p, lambda: (p / "new").write_bytes(b"")), id="extra"),
        pytest.param(lambda p: _same_times(p, lambda: os.unlink(p / "link")), id="missing"),
        pytest.param(
            lambda p: _same_times(
                p / "d",
                lambda: (
                    os.unlink(p / "d" / "hard"),
                    shutil.copy2(p / "d" / "f", p / "d" / "hard"),
                ),
            ),
            id="hardlink-split",
        ),
    ],
)
def test_walk_notices_differences(tmp_path: Path, mutate) -> None:  # type: ignore[no-untyped-def]
    src, dst = tmp_path / "a", tmp_path / "b"
    _make(src)
    _clone(src, dst)
    assert walk_differences(src, dst) == []
    mutate(dst)
    assert len(walk_differences(src, dst)) >= 1


def test_rsync_notices_differences(tmp_path: Path) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    _make(src)
    _clone(src, dst)
    assert rsync_differences(src, dst) == []
    os.setxattr(dst / "g", "user.extra", b"x")
    assert rsync_differences(src, dst) != []
