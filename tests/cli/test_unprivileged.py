"""strongroom as an unprivileged user (`nobody`), started from root.

Root reads everything, so unreadable files need an unprivileged backup. The
trees live in a world-readable folder (pytest's tmp_path is private to root)
with a repository owned by `nobody`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import init_local_repository
from tests.helpers.cli import NOBODY, nobody_command, run_cli
from tests.helpers.marks import ROOT
from tests.helpers.tree import write_file

pytestmark = ROOT  # to become nobody


@pytest.fixture
def world_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="strongroom-nobody-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def nobody_env(world_dir: Path) -> dict[str, str]:
    """A repository and a home owned by nobody, below `world_dir`."""
    repo = world_dir / "repo"
    init_local_repository(repo)
    home = world_dir / "home"
    home.mkdir()
    chown_tree(repo, NOBODY)
    chown_tree(home, NOBODY)
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "STRONGROOM_REPO": str(repo),
        "USER": "nobody",
        "LOGNAME": "nobody",
    }


def test_unreadable_files_give_exit_code_3(world_dir: Path) -> None:
    src = world_dir / "src"
    write_file(src / "readable.txt", b"anyone may read this\n", 0o644)
    write_file(src / "sub" / "also.txt", b"and this\n", 0o644)
    write_file(src / "secret.txt", b"nobody may read this\n", 0o000)
    os.link(src / "secret.txt", src / "sub" / "secret-link")  # its other name goes too
    write_file(src / "closed" / "inside.txt", b"behind a closed door\n", 0o644)
    os.chmod(src / "closed", 0o000)
    for d in (src, src / "sub"):
        os.chmod(d, 0o755)

    env = nobody_env(world_dir)
    result = run_cli(["backup", str(src), "--json"], env, command=nobody_command(), cwd=world_dir)
    assert result.rc == 3, result.out + result.err
    summary = result.summary()
    assert summary["unreadable"] == 2
    assert summary["point_id"]
    warnings = [d["message"] for d in result.lines() if d.get("message_type") == "warning"]
    assert any(str(src / "secret.txt") in w for w in warnings), warnings
    assert any(str(src / "closed") in w for w in warnings), warnings

    listed = run_cli(["ls", "latest", str(src), "--json"], env, command=nobody_command())
    assert listed.rc == 0, listed.err
    paths = {d["path"] for d in listed.lines()}
    assert str(src / "readable.txt") in paths and str(src / "sub" / "also.txt") in paths
    assert str(src / "secret.txt") not in paths
    assert str(src / "sub" / "secret-link") not in paths
    assert not any(p.startswith(str(src / "closed") + "/") for p in paths)

    # Without --json, one notice says how many files are missing from the point.
    again = run_cli(["backup", str(src)], env, command=nobody_command(), cwd=world_dir)
    assert again.rc == 3
    assert "2 files could not be read" in again.err
    assert "Traceback" not in again.err


def test_restore_without_privileges(world_dir: Path) -> None:
    """What needs root is skipped: owners, trusted.* xattrs quietly, device nodes
    with a warning (exit 3); contents, modes, times and user.* xattrs are restored."""
    src = world_dir / "src"
    f = write_file(src / "file", b"content\n", 0o640)
    os.setxattr(f, "user.note", b"kept")
    os.setxattr(f, "trusted.secret", b"needs root")
    os.chown(f, 1234, 5678)
    os.utime(f, ns=(1_600_000_000_111_111_111, 1_500_000_000_222_222_222))
    os.mknod(src / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mkfifo(src / "fifo", 0o604)
    os.symlink("file", src / "link")
    env = nobody_env(world_dir)
    assert run_cli(["backup", str(src)], env).rc == 0  # as root: everything recorded
    chown_tree(Path(env["STRONGROOM_REPO"]), NOBODY)  # what root just wrote, too

    target = world_dir / "target"
    target.mkdir()
    os.chown(target, NOBODY, NOBODY)
    result = run_cli(
        ["restore", "latest", "--target", str(target), "--json"],
        env,
        command=nobody_command(),
        cwd=world_dir,
    )
    assert result.rc == 3, result.out + result.err
    assert result.summary()["warnings"] == [f"{src / 'null'}: device nodes need root; skipped"]
    root = target / str(src).lstrip("/")
    restored = root / "file"
    st = os.stat(restored)
    assert restored.read_bytes() == b"content\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o640, NOBODY)
    assert st.st_mtime_ns == 1_500_000_000_222_222_222
    assert os.listxattr(restored) == ["user.note"]
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(root / "fifo").st_mode) == 0o604
    assert os.readlink(root / "link") == "file"
    assert not (root / "null").exists()
