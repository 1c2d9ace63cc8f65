"""A tree on XFS (reflink=1) is read by journal-driven cycles from reflink copies
of its changed files made inside the hooks' hold (sources/reflink.py,
services/protect_service.py), as root, on a small loop-mounted XFS.

The service test's writer keeps rewriting a counter at the head of a 24 MiB
file; the policy's command hook pauses it (pre) and lets it go (post) before
the cycle reads, so the writer rewrites the file while it is read: each point
holds exactly the value the file had when it was copied, with no "changed
while read" warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.sources.btrfs import SNAPSHOT_FOLDER, ignored_folder
from strongroom.sources.reflink import plan_copies
from tests.protect.loopfs import ROOT, loop_ext4
from tests.protect.test_service import (
    env,  # noqa: F401  (a fixture)
    outcomes,
    points,
    restore,
    start_service,
    write_policy,
)

pytestmark = [
    ROOT,
    pytest.mark.skipif(shutil.which("mkfs.xfs") is None, reason="needs xfsprogs"),
    pytest.mark.xdist_group("journal-trackers"),
]

BIG = 24 << 20


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """A mounted XFS (320 MiB sparse, reflink=1: mkfs.xfs's default) at tmp_path/mnt."""
    image, mount = tmp_path / "xfs.img", tmp_path / "mnt"
    with open(image, "wb") as f:
        f.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mount.mkdir()
    proc = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot loop-mount an XFS: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_copies_share_the_blocks_of_changed_regular_files_only(xfs: Path, tmp_path: Path) -> None:
    """Copies of the changed regular files use no data blocks (shared extents);
    symlinks (even one on the way to a path), FIFOs and gone paths are not
    copied; leftovers of a killed cycle go; nothing stays after `delete`. On
    ext4 no copies are made and nothing is left behind."""
    tree = xfs  # the file system's top: the folder is inside the tree
    body = os.urandom(1 << 20) * (BIG >> 20)
    (tree / "big").write_bytes(body)
    (tree / "small").write_bytes(b"s" * 100)
    (tree / "link").symlink_to("/etc/passwd")
    (tree / "sd").symlink_to("/etc")
    os.mkfifo(tree / "fifo")
    os.sync()
    assert ignored_folder(tree) == SNAPSHOT_FOLDER.encode()
    copies = plan_copies(str(tree), "unit")
    assert copies is not None
    stale = Path(copies.folder) / f"{copies.prefix}killed"
    stale.mkdir(parents=True)
    (stale / "0").write_bytes(b"left by a killed cycle")
    assert copies.prepare() is None
    assert not stale.exists()
    free = _free(xfs)
    changed = {"big", "small", "link", "sd/passwd", "fifo", "gone", "../x"}
    assert copies.copy(changed, time.monotonic() + 10) is None
    assert _free(xfs) > free - (1 << 20), "the copies took data blocks"
    assert sorted(copies.files) == ["big", "small"]
    folder = Path(copies.path)
    big = copies.files["big"]
    assert (folder / os.fsdecode(big.name)).read_bytes() == body
    assert big.stat.st_ino == os.stat(tree / "big").st_ino and big.stat.st_size == BIG
    frag = subprocess.run(
        ["filefrag", "-v", str(folder / os.fsdecode(big.name))],
        text=True,
        capture_output=True,
        check=False,
    )
    if frag.returncode == 0:
        assert "shared" in frag.stdout, frag.stdout
    (tree / "big").write_bytes(b"changed")  # the copy keeps its bytes
    assert (folder / os.fsdecode(big.name)).read_bytes() == body
    copies.delete()
    assert os.listdir(copies.folder) == []

    (tmp_path / "e").mkdir()
    with loop_ext4(tmp_path / "e", 32) as ext4:
        on_ext4 = plan_copies(str(ext4), "unit")
        assert on_ext4 is not None
        assert on_ext4.prepare() is not None
        assert not (ext4 / SNAPSHOT_FOLDER).exists()


class PausingWriter:
    """Rewrites the 8-byte counter at the head of `path` until `pause` exists;
    then writes the last value into `ack` and waits until `pause` is gone."""

    def __init__(self, path: Path, pause: Path, ack: Path) -> None:
        self.path, self.pause, self.ack = path, pause, ack
        self.value = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PausingWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                while not self._stop.is_set():
                    if self.pause.exists():
                        if not self.ack.exists():
                            tmp = self.ack.with_suffix(".tmp")
                            tmp.write_text(str(self.value))
                            tmp.rename(self.ack)
                        time.sleep(0.005)
                        continue
                    self.value += 1
                    os.pwrite(fd, b"%08d" % self.value, 0)
                    time.sleep(0.002)
            finally:
                os.close(fd)
        except BaseException as err:  # reported by the test
            self.error = err

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_service_points_hold_each_changed_file_as_copied_while_it_is_rewritten(
    env: dict[str, str],  # noqa: F811
    xfs: Path,
    repo_path: Path,
    tmp_path: Path,
) -> None:
    tree = xfs / "data"  # below the top: the copies' folder is outside the tree
    tree.mkdir()
    (tree / "big").write_bytes(b"%08d" % 0 + os.urandom(BIG - 8))
    pause, ack, log = tmp_path / "pause", tmp_path / "ack", tmp_path / "acked"
    pre = f"touch {pause}; while [ ! -e {ack} ]; do sleep 0.01; done"
    post = f"cat {ack} >> {log}; echo >> {log}; rm -f {pause} {ack}"
    write_policy(
        env,
        "x",
        f'sources = ["{tree}"]\ncycle = "2s"\nfreeze_timeout = "5s"\n'
        f"hooks = [{{type = \"command\", pre = '{pre}', post = '{post}'}}]",
    )
    writer = PausingWriter(tree / "big", pause, ack).start()
    try:
        done = outcomes(start_service(env, "--policy", "x", "--cycles", "3"))
    finally:
        writer.stop()
    assert writer.error is None
    assert [o["error"] for o in done] == [""] * 3, done
    assert done[0]["full"] and not any(o["full"] for o in done[1:]), done
    acked = [int(v) for v in log.read_text().split()]
    assert len(acked) == 3
    assert os.listdir(xfs / SNAPSHOT_FOLDER) == []  # deleted after every cycle
    for p, value in list(zip(points(repo_path, done), acked, strict=True))[1:]:
        copied = p.summary["protect"]["snapshot"]
        assert copied["kind"] == "reflink" and copied["files"] == 1, copied
        assert p.consistency == "application-consistent", p.summary["protect"]
        assert p.summary["protect"]["quiesce"]["frozen"] is False  # no fsfreeze
        root = restore(env, p.id, tmp_path / f"r-{p.short_id}")
        assert int((root / "big").read_bytes()[:8]) == value
        assert p.summary["warnings"] == 0, "the copy was re-checked as a live file"
    assert writer.value > acked[-1], "the writer never wrote after the copies"
