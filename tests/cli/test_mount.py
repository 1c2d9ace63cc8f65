"""strongroom mount: the repository as a read-only FUSE file system, checked with real tools.

One mount per module serves the read-only checks (two file points, an ext4
image point, a VM point made of it, a disk with two partitions); the tests of
ending a mount (SIGTERM under load, fusermount3 -u, Ctrl-C, SIGKILL) start their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest

from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.vm import VmDisk, VmManifest
from strongroom.pipeline.blockmaps import save_vm_manifest
from tests.conftest import init_local_repository, open_local_repository
from tests.helpers.cli import FAST_KDF, NOBODY, PASSWORD, nobody_command, run_cli
from tests.helpers.fuse_mount import Mount, mounted, needs_fuse
from tests.helpers.marks import IS_ROOT, needs_root
from tests.helpers.tree import random_bytes

# One worker for the module: its mount fixture is set up once, not once per worker.
pytestmark = [needs_fuse, pytest.mark.xdist_group("mount")]


@dataclass
class Mounted:
    mnt: Path
    src: Path
    image: Path
    env: dict[str, str]
    ids: dict[str, str]  # "first", "second", "image", "vm", "partitioned" -> point id


def _env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("STRONGROOM_PASSWORD_FILE", "STRONGROOM_CONFIG", "STRONGROOM_NO_CACHE"):
        env.pop(name, None)
    home = base / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        STRONGROOM_KDF=FAST_KDF,
        STRONGROOM_PASSWORD=PASSWORD,
        STRONGROOM_REPO=str(base / "repo"),
        STRONGROOM_PRIORITY="normal",
    )
    return env


def _make_tree(src: Path) -> None:
    """Hard links, symlinks, xattrs, an ACL, a sparse file, unicode names, an empty folder."""
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty folder").mkdir()
    (src / "a.txt").write_bytes(b"hello\n")
    os.link(src / "a.txt", src / "sub" / "hard link")
    (src / "sub" / "b.bin").write_bytes(random_bytes(300_000, 1))
    (src / "sub" / "deeper" / "ünïcödé ✓.txt").write_text("unicode\n")
    os.symlink("../a.txt", src / "sub" / "link")
    os.symlink("/nowhere/at/all", src / "dangling")
    os.setxattr(src / "a.txt", "user.note", b"kept")
    with open(src / "sparse", "wb") as f:
        f.truncate(6 << 20)
        f.write(b"head")
        f.seek(5 << 20)
        f.write(b"middle")
    os.mkfifo(src / "fifo")
    os.chmod(src / "sub" / "b.bin", 0o600)
    if IS_ROOT:
        subprocess.run(["setfacl", "-m", "u:nobody:r", str(src / "a.txt")], check=True)
        os.mknod(src / "null", 0o644 | 0o020000, os.makedev(1, 3))
        os.chown(src / "sub" / "b.bin", 1234, 5678)
    os.utime(
        src / "sub" / "link", ns=(1_000_000_123, 981_173_106_123_456_789), follow_symlinks=False
    )


def _backup(env: dict[str, str], *args: str) -> str:
    result = run_cli(["backup", *args, "--json"], env)
    assert result.rc == 0, result.err
    point_id: str = result.summary()["point_id"]
    return point_id


def _vm_point(repo_path: Path, image_point: str) -> str:
    """A VM point whose two disks are the image point's disk (made in process:
    a real VM backup needs a cluster; tests/vms/ make those)."""
    repo = open_local_repository(repo_path)
    try:
        image = RecoveryPoint.from_doc(repo.load_point(image_point))
        size, bs = image.summary["size"], image.summary["block_size"]
        disks = [VmDisk(name, size, bs, image.tree) for name in ("sda", "sdb")]
        manifest = save_vm_manifest(repo, VmManifest("guest", disks))
        repo.flush()
        later = image.time + timedelta(seconds=1)
        point = replace(
            image, kind=PointKind.VM, tree=manifest.hex(), paths=["vm:guest"], time=later
        )
        return repo.save_point(point.to_doc())
    finally:
        repo.close()


def _partitioned_disk(base: Path) -> Path:
    """MBR with two ext4 partitions (1: one.txt, 2: two.txt)."""
    disk = base / "partitioned.raw"
    with open(disk, "wb") as f:
        f.truncate(10 << 20)
    table = "label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=8192, type=83\n"
    subprocess.run(["sfdisk", "-q", str(disk)], input=table.encode(), check=True)
    for number, offset in ((1, 1 << 20), (2, 5 << 20)):
        files = base / f"part{number}"
        files.mkdir()
        (files / f"{number}.txt").write_text(f"partition {number}\n")
        subprocess.run(
            ["mkfs.ext4", "-q", "-d", str(files), "-E", f"offset={offset}", str(disk), "4M"],
            check=True, capture_output=True,
        )  # fmt: skip
    return disk


@pytest.fixture(scope="module")
def mounted_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    base = tmp_path_factory.mktemp("mount")
    env = _env(base)
    init_local_repository(base / "repo")
    src = base / "src"
    _make_tree(src)
    ids = {"first": _backup(env, str(src), "--tag", "daily", "--host", "web")}
    (src / "a.txt").write_bytes(b"second version\n")
    (src / "sub" / "hard link").unlink()
    os.link(src / "a.txt", src / "sub" / "hard link")
    ids["second"] = _backup(env, str(src), "--host", "db/primary")
    files = base / "fs"
    (files / "d").mkdir(parents=True)
    (files / "d" / "f.txt").write_bytes(b"inside the image\n")
    (files / "big").write_bytes(random_bytes(400_000, 2))
    image = base / "disk.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-d", str(files), str(image), "8M"], check=True, capture_output=True
    )
    ids["image"] = _backup(env, "--image", str(image))
    ids["vm"] = _vm_point(base / "repo", ids["image"])
    ids["partitioned"] = _backup(env, "--image", str(_partitioned_disk(base)))
    mnt = base / "mnt"
    mnt.mkdir()
    mount = Mount(mnt, env)
    assert mount.ready["points"] == 5
    try:
        yield Mounted(mnt, src, image, env, ids)
    finally:
        assert mount.stop() == 0
        assert not mounted(mnt)
        shutil.rmtree(base, ignore_errors=True)


def _in_point(m: Mounted, where: str) -> Path:
    return m.mnt / where / str(m.src).lstrip("/")


def test_a_file_point_equals_its_source_under_rsync(mounted_repo: Mounted) -> None:
    m = mounted_repo
    # -H hard links, -A ACLs, -X xattrs, --checksum every byte: nothing to do.
    result = subprocess.run(
        ["rsync", "-aHAXn", "--checksum", "--itemize-changes", f"{m.src}/",
         f"{_in_point(m, 'ids/' + m.ids['second'])}/"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    root = _in_point(m, "ids/" + m.ids["second"])
    a, hard = (root / "a.txt").stat(), (root / "sub" / "hard link").stat()
    assert (a.st_ino, a.st_nlink) == (hard.st_ino, 2)
    assert os.getxattr(root / "a.txt", "user.note") == b"kept"
    assert (root / "sub" / "link").lstat().st_mtime_ns == 981_173_106_123_456_789
    assert os.readlink(root / "dangling") == "/nowhere/at/all"
    assert (root / "sparse").stat().st_size == 6 << 20
    with open(root / "sparse", "rb") as f:
        f.seek((5 << 20) - 2)
        assert f.read(10) == b"\0\0middle\0\0"
    with pytest.raises(OSError):
        os.open(root / "a.txt", os.O_RDWR)


def test_points_by_id_time_host_and_tag(mounted_repo: Mounted) -> None:
    m = mounted_repo
    top = sorted(os.listdir(m.mnt))
    assert top == ["hosts", "ids", "snapshots", "tags"]
    assert sorted(os.listdir(m.mnt / "ids")) == sorted(m.ids.values())
    snaps = os.listdir(m.mnt / "snapshots")
    assert len(snaps) == 6 and "latest" in snaps
    assert os.readlink(m.mnt / "snapshots" / "latest") in snaps
    assert sorted(os.listdir(m.mnt / "hosts")) == sorted(
        ["web", "db%2Fprimary", os.uname().nodename]
    )
    assert _in_point(m, "hosts/web/latest").joinpath("a.txt").read_bytes() == b"hello\n"
    second = _in_point(m, "hosts/db%2Fprimary/latest").joinpath("a.txt")
    assert second.read_bytes() == b"second version\n"
    assert os.listdir(m.mnt / "tags") == ["daily"]
    tagged = _in_point(m, "tags/daily/latest")
    assert tagged.joinpath("sub", "hard link").read_bytes() == b"hello\n"
    assert not (m.mnt / "snapshots" / "nothing").exists()


def test_an_image_point_as_a_disk_and_its_files(mounted_repo: Mounted) -> None:
    m = mounted_repo
    point = m.mnt / "ids" / m.ids["image"]
    assert sorted(os.listdir(point)) == ["disk.raw", "files"]
    disk = point / "disk.raw"
    assert disk.stat().st_size == m.image.stat().st_size
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(disk), str(m.image)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert sorted(os.listdir(point / "files")) == ["big", "d", "lost+found"]
    assert (point / "files" / "d" / "f.txt").read_bytes() == b"inside the image\n"
    assert (point / "files" / "big").read_bytes() == random_bytes(400_000, 2)


def test_a_vm_point_as_its_disks(mounted_repo: Mounted) -> None:
    disks = mounted_repo.mnt / "ids" / mounted_repo.ids["vm"] / "disks"
    assert sorted(os.listdir(disks)) == ["sda.raw", "sdb.raw"]
    original = mounted_repo.image.read_bytes()
    assert (disks / "sdb.raw").read_bytes() == original
    with open(disks / "sda.raw", "rb") as f:
        f.seek(len(original) - 100)
        assert f.read(1000) == original[-100:]


def test_each_readable_partition_has_its_folder(mounted_repo: Mounted) -> None:
    point = mounted_repo.mnt / "ids" / mounted_repo.ids["partitioned"]
    assert sorted(os.listdir(point)) == ["disk.raw", "files", "partitions"]
    assert sorted(os.listdir(point / "partitions")) == ["1", "2"]
    assert (point / "files" / "1.txt").read_text() == "partition 1\n"  # the first, as `ls`
    assert (point / "partitions" / "2" / "2.txt").read_text() == "partition 2\n"
    assert not (point / "partitions" / "2" / "1.txt").exists()


@needs_root
def test_the_disk_file_is_loop_mountable(mounted_repo: Mounted, tmp_path: Path) -> None:
    disk = mounted_repo.mnt / "ids" / mounted_repo.ids["image"] / "disk.raw"
    loop = subprocess.run(
        ["losetup", "-f", "--show", "-r", str(disk)], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = tmp_path / "ro"
    target.mkdir()
    try:
        subprocess.run(["mount", "-o", "ro", loop, str(target)], check=True, timeout=60)
        try:
            assert (target / "d" / "f.txt").read_bytes() == b"inside the image\n"
            assert (target / "big").read_bytes() == random_bytes(400_000, 2)
        finally:
            subprocess.run(["umount", str(target)], check=True, timeout=60)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_sigterm_while_a_file_is_read_unmounts_and_exits_0(
    mounted_repo: Mounted, tmp_path: Path
) -> None:
    """Its own mount: a reader loops over the image's disk file when SIGTERM comes."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = Mount(mnt, mounted_repo.env, "--tag", "daily")
    assert mount.ready["points"] == 1
    big = _in_point(mounted_repo, "tags/daily/latest") / "sub" / "b.bin"
    started, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                with open(big, "rb", buffering=0) as f:
                    # out of the page cache, so every pass reads through the mount
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                    while f.read(4096):
                        started.set()
        except OSError as err:  # the mount went away under the reader: expected
            errors.append(err)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        assert mount.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not mounted(mnt)
    assert os.listdir(mnt) == []


def test_fusermount_u_and_ctrl_c_end_it_with_0(mounted_repo: Mounted, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = Mount(mnt, mounted_repo.env, "--host", "web")
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=30)
    assert mount.proc.wait(30) == 0
    mount = Mount(mnt, mounted_repo.env, "--host", "web")
    assert mount.stop(signal.SIGINT) == 0
    assert not mounted(mnt)


def test_a_killed_mount_leaves_no_dead_mount_point(mounted_repo: Mounted, tmp_path: Path) -> None:
    """SIGKILL: the fusermount3 watching the mount (auto_unmount) unmounts it."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = Mount(mnt, mounted_repo.env, "--host", "web")
    mount.proc.kill()
    assert mount.proc.wait(30) == -signal.SIGKILL
    deadline = time.monotonic() + 20
    while mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mounted(mnt)
    assert os.listdir(mnt) == []  # not "Transport endpoint is not connected"


def test_mount_point_errors_are_one_line(mounted_repo: Mounted, tmp_path: Path) -> None:
    env = mounted_repo.env
    afile = tmp_path / "file"
    afile.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    for where, words in (
        (afile, "is not a folder"),
        (full, "is not empty"),
        (tmp_path / "missing", "does not exist"),
    ):
        result = run_cli(["mount", str(where)], env, timeout=60)
        assert result.rc == 2, result.err
        assert result.err.count("\n") == 1 and words in result.err
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = run_cli(["mount", str(empty)], {**env, "STRONGROOM_PASSWORD": "wrong password"})
    assert wrong.rc == 12
    assert wrong.err.count("\n") == 1 and "password" in wrong.err
    assert not mounted(empty)


@needs_root
def test_an_unprivileged_user_mounts_through_fusermount3() -> None:
    """As `nobody`: fusermount3 mounts it, only that user reads it, SIGTERM ends it with 0."""
    world = Path(tempfile.mkdtemp(prefix="strongroom-mount-nobody-"))
    os.chmod(world, 0o755)  # pytest's tmp_path is private to root
    try:
        env = _env(world)
        env.update(USER="nobody", LOGNAME="nobody")
        init_local_repository(world / "repo")
        src = world / "src"
        src.mkdir()
        (src / "a.txt").write_text("mine\n")
        _backup(env, str(src))
        mnt = world / "mnt"
        mnt.mkdir()
        for folder, dirs, files in os.walk(world):
            for name in ["", *dirs, *files]:
                os.chown(os.path.join(folder, name), NOBODY, NOBODY, follow_symlinks=False)
        mount = Mount(mnt, env, command=nobody_command())
        try:
            as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            read = subprocess.run(
                [*as_nobody, "cat", f"{mnt}/snapshots/latest{src}/a.txt"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert (read.returncode, read.stdout) == (0, "mine\n"), read.stderr
            assert not os.path.exists(mnt / "snapshots")  # not even root: no --allow-other
        finally:
            assert mount.stop() == 0
        assert not mounted(mnt)
    finally:
        shutil.rmtree(world, ignore_errors=True)
