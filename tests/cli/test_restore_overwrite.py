"""restore over what the target holds: --overwrite's modes (restic 0.17's),
entries of another type in the way, hard links out of the target, -v/-vv lines."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.conftest import CliRunner

MiB = 1 << 20
BIG = random.Random(7).randbytes(9 * MiB + 5)  # several chunks (1 MiB on average, 4 at most)
FILES = {
    "changed.txt": b"changed: original bytes\n",
    "older.txt": b"older: original\n",
    "newer.txt": b"newer: original\n",
    "same.txt": b"same in target and point\n",
    "typed": b"a file in the point, a directory in the target\n",
    "gone.txt": b"removed from the target, restored in every mode\n",
    "big.bin": BIG,
}
POINT_MTIME = 1_700_000_000  # every entry of the point has this mtime


@pytest.fixture
def setup(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> tuple[Path, Path]:
    """A point of a small tree (and a symlink `link`), restored once into `t`."""
    src = tmp_path / "src"
    src.mkdir()
    for name, data in FILES.items():
        (src / name).write_bytes(data)
        os.utime(src / name, (POINT_MTIME, POINT_MTIME))
    (src / "link").symlink_to("same.txt")
    result = cli("backup", str(src))
    assert result.rc == 0, result.err
    target = tmp_path / "t"
    assert cli("restore", "latest", "--target", str(target)).rc == 0
    return src, target / str(src).lstrip("/")


def statuses(out: str) -> dict[str, str]:
    """`-vv` lines (`word path`) as {file name: word}."""
    lines = [line.split(None, 1) for line in out.splitlines()]
    return {os.path.basename(p): w for w, p in (x for x in lines if len(x) == 2) if p[:1] == "/"}


def change_target(restored: Path) -> dict[str, int]:
    """Edit the restored tree as a user would; returns inodes to compare with later."""
    changed = restored / "changed.txt"  # same size and mtime: if-changed trusts them
    changed.write_bytes(b"CHANGED: original bytes\n")
    os.utime(changed, (POINT_MTIME, POINT_MTIME))
    (restored / "older.txt").write_bytes(b"older: edited long ago\n")
    os.utime(restored / "older.txt", (POINT_MTIME - 3600, POINT_MTIME - 3600))
    (restored / "newer.txt").write_bytes(b"newer: edited since\n")
    os.utime(restored / "newer.txt", (POINT_MTIME + 3600, POINT_MTIME + 3600))
    (restored / "typed").unlink()
    (restored / "typed").mkdir()
    (restored / "typed" / "inside").write_bytes(b"mine")
    (restored / "gone.txt").unlink()
    (restored / "link").unlink()
    (restored / "link").write_bytes(b"a file where the point has a symlink")
    return {n: os.stat(restored / n).st_ino for n in ("changed.txt", "same.txt", "big.bin")}


EXPECTED = {  # file -> status, per mode ("kept": the target's edit survives)
    "always": {
        "changed.txt": "updated",
        "older.txt": "updated",
        "newer.txt": "updated",
        "same.txt": "unchanged",
        "big.bin": "unchanged",
        "typed": "updated",
        "link": "updated",
        "gone.txt": "restored",
    },
    "if-changed": {
        "changed.txt": "unchanged",
        "older.txt": "updated",
        "newer.txt": "updated",
        "same.txt": "unchanged",
        "big.bin": "unchanged",
        "typed": "updated",
        "link": "updated",
        "gone.txt": "restored",
    },
    "if-newer": {
        "changed.txt": "unchanged",
        "older.txt": "updated",
        "newer.txt": "unchanged",
        "same.txt": "unchanged",
        "big.bin": "unchanged",
        "typed": "unchanged",
        "link": "unchanged",
        "gone.txt": "restored",
    },
    "never": {
        "changed.txt": "unchanged",
        "older.txt": "unchanged",
        "newer.txt": "unchanged",
        "same.txt": "unchanged",
        "big.bin": "unchanged",
        "typed": "unchanged",
        "link": "unchanged",
        "gone.txt": "restored",
    },
}


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_overwrite_modes(
    tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path], mode: str
) -> None:
    _, restored = setup
    before = {n: (restored / n).read_bytes() for n in FILES if (restored / n).is_file()}
    inodes = change_target(restored)
    edited = {n: (restored / n).read_bytes() for n in FILES if (restored / n).is_file()}
    target = str(tmp_path / "t")
    result = cli("restore", "latest", "--target", target, "--overwrite", mode, "-vv")
    assert result.rc == 0, result.err
    said = statuses(result.out)
    assert {n: said[n] for n in EXPECTED[mode]} == EXPECTED[mode]
    for name, status in EXPECTED[mode].items():
        path = restored / name
        if status == "unchanged" and name in ("typed", "link"):
            assert not path.is_symlink() and os.path.exists(path)  # the target's entry stays
        elif status == "unchanged":
            assert path.read_bytes() == edited.get(name, before.get(name)), name
        elif name == "link":
            assert path.is_symlink() and os.readlink(path) == "same.txt"
        else:
            assert path.read_bytes() == FILES[name], name
    # Equal files are never rewritten; `always` rewrites a changed file in place.
    assert os.stat(restored / "same.txt").st_ino == inodes["same.txt"]
    assert os.stat(restored / "big.bin").st_ino == inodes["big.bin"]
    if mode == "always":
        assert os.stat(restored / "changed.txt").st_ino == inodes["changed.txt"]
        assert (restored / "typed").is_file()
    # -v without the second v leaves out the unchanged ones
    quiet = cli("restore", "latest", "--target", target, "--overwrite", mode, "-v")
    assert quiet.rc == 0 and not statuses(quiet.out)  # all unchanged now: no line


def test_always_rewrites_only_the_chunks_that_differ(
    tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path]
) -> None:
    _, restored = setup
    big = restored / "big.bin"
    inode = os.stat(big).st_ino
    with open(big, "r+b") as f:  # one byte in the middle of a 9 MiB file
        f.seek(len(BIG) // 2)
        f.write(b"\xff" if BIG[len(BIG) // 2] != 0xFF else b"\x00")
        f.truncate(len(BIG) + 100)  # and a longer tail
    result = cli("restore", "latest", "--target", str(tmp_path / "t"), "--json")
    assert result.rc == 0, result.err
    summary = result.summary()
    assert 0 < summary["bytes_written"] <= 4 * MiB  # one chunk (at most 4 MiB), not 9 MiB
    assert summary["updated"] == 1 and summary["unchanged"] == len(FILES) - 1 + 1  # + link
    assert big.read_bytes() == BIG and os.stat(big).st_ino == inode


def test_a_hard_link_out_of_the_target_is_replaced_not_written_through(
    tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path]
) -> None:
    _, restored = setup
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside the target\n")
    (restored / "changed.txt").unlink()
    os.link(outside, restored / "changed.txt")
    result = cli("restore", "latest", "--target", str(tmp_path / "t"), "-v")
    assert result.rc == 0, result.err
    assert outside.read_bytes() == b"outside the target\n"
    assert (restored / "changed.txt").read_bytes() == FILES["changed.txt"]
    assert os.stat(restored / "changed.txt").st_ino != os.stat(outside).st_ino
    assert statuses(result.out)["changed.txt"] == "updated"


def test_a_symlink_in_the_way_of_a_file_is_replaced_not_followed(
    tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path]
) -> None:
    _, restored = setup
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"keep")
    (restored / "big.bin").unlink()
    (restored / "big.bin").symlink_to(outside / "big.bin")
    (restored / "typed").unlink()
    (restored / "typed").symlink_to(outside)  # a symlink to a directory where a file goes
    result = cli("restore", "latest", "--target", str(tmp_path / "t"))
    assert result.rc == 0, result.err
    assert (outside / "big.bin").read_bytes() == b"keep" and len(list(outside.iterdir())) == 1
    assert (restored / "big.bin").read_bytes() == BIG and not (restored / "big.bin").is_symlink()
    assert (restored / "typed").read_bytes() == FILES["typed"]


def test_progress_has_totals(tmp_path: Path, cli: CliRunner, setup: tuple[Path, Path]) -> None:
    result = cli("restore", "latest", "--target", str(tmp_path / "fresh"), "--json")
    assert result.rc == 0, result.err
    status = [line for line in result.lines() if line["message_type"] == "status"]
    assert status, result.out
    assert status[-1]["files_total"] == len(FILES)
    assert status[-1]["bytes_total"] == sum(len(d) for d in FILES.values())
